"""MkDocs hook: the package's docstrings cross-reference in reST (``:class:`X```); show just ``X``.

mkdocstrings renders the role's target as code but leaves the role name (``:class:``) in
front of it; this drops the role name from the rendered page.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|data|attr|exc|obj|const):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)

"""Redis URLs: one node, a Cluster or a Sentinel-managed primary, read in one place.

* ``redis://``, ``rediss://``, ``unix://``: one node, as redis-py reads them.
* ``redis+cluster://host:port[,host:port...]``: seed nodes of a Redis Cluster (db 0).
* ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``:
  the Sentinels to ask for ``service_name``'s primary; the credentials are used for
  the Sentinels and the data nodes alike.
* ``rediss+cluster://`` and ``rediss+sentinel://``: the same over TLS.

A port left out is 6379 for data nodes and 26379 for Sentinels. Malformed URLs raise
``ValueError`` saying what is wrong; the password never appears in a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["RedisTarget", "parse_redis_url"]

Topology = Literal["redis", "cluster", "sentinel"]

_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("redis", False),
    "rediss": ("redis", True),
    "unix": ("redis", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_PASSWORD = re.compile(r"(://[^:@/]*:)[^@/]*@")
_DEFAULT_PORT = {"cluster": 6379, "sentinel": 26379}


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names. ``url`` is the URL as given (``redis`` topology only)."""

    topology: Topology
    tls: bool
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def backend_name(self) -> str:
        """``cache.backend`` of a cache on this target: ``redis``, ``redis-cluster``, ``redis-sentinel``."""
        return "redis" if self.topology == "redis" else f"redis-{self.topology}"

    def redacted(self) -> str:
        """The URL with its password replaced by ``***`` (for logs and ``check``)."""
        return _redacted(self.url)


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``url``; ``ValueError`` naming the problem when it is malformed."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"redis_url must be a URL such as redis://host:6379/0, got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(f"redis_url has an unknown scheme {scheme + '://'!r}; use one of {known}")
    topology, tls = _SCHEMES[scheme]
    if topology == "redis":
        return RedisTarget(topology, tls, url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 address
        raise ValueError(f"redis_url {_redacted(url)!r} is not a valid URL: {exc}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"a {scheme}:// URL takes no query or fragment (got {_redacted(url)!r})")
    target = RedisTarget(
        topology,
        tls,
        url,
        nodes=_nodes(parts.netloc.rsplit("@", 1)[-1], _DEFAULT_PORT[topology], scheme),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
    path = [segment for segment in parts.path.split("/") if segment]
    if topology == "cluster":
        if path:
            raise ValueError(
                f"a {scheme}:// URL names seed nodes only (a cluster has one database, 0); "
                f"remove the path {parts.path!r}"
            )
        return target
    return _with_service(target, path, scheme)


def _with_service(target: RedisTarget, path: list[str], scheme: str) -> RedisTarget:
    if not path:
        raise ValueError(f"a {scheme}:// URL needs the service name: {scheme}://host:26379/mymaster[/db]")
    if len(path) > 2:
        raise ValueError(f"a {scheme}:// URL path is /service_name[/db], got /{'/'.join(path)}")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"the database in a {scheme}:// URL must be a number, got {path[1]!r}")
        db = int(path[1])
    return replace(target, service_name=unquote(path[0]), db=db)


def _nodes(hosts: str, default_port: int, scheme: str) -> tuple[tuple[str, int], ...]:
    if not hosts:
        raise ValueError(f"a {scheme}:// URL needs at least one host:port")
    return tuple(_node(item.strip(), default_port, scheme) for item in hosts.split(","))


def _node(item: str, default_port: int, scheme: str) -> tuple[str, int]:
    if not item:
        raise ValueError(f"a {scheme}:// URL has an empty entry in its host list")
    if item.startswith("["):  # [::1]:6379
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{item!r} in a {scheme}:// URL is not host:port")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"{item!r} in a {scheme}:// URL has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{item!r} in a {scheme}:// URL has an invalid port {port_text!r}")
    return host, int(port_text)


def _redacted(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)

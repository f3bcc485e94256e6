"""Several processes writing (and rotating) the same log files lose and duplicate nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

WORKERS = 4
RECORDS = 2_000

WRITER = textwrap.dedent(
    """
    import sys, telemetry_infra as ti
    log_dir, worker, rotate_every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ti.setup_logging("INFO", log_dir=log_dir, environment="production", console=False,
                     rotate_every=rotate_every, backup_count=10_000)
    log = ti.get_logger("api.worker")
    padding = "x" * 300  # long lines make torn or interleaved writes visible
    for seq in range(int(sys.argv[4])):
        log.info("record %d from %d", seq, worker, extra={"worker": worker, "seq": seq, "padding": padding})
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("rotate_every", [86_400, 0.05], ids=["daily", "rotating-every-50ms"])
def test_every_record_is_written_exactly_once(tmp_path, rotate_every):
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(worker), str(rotate_every), str(RECORDS)]
        )
        for worker in range(WORKERS)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * WORKERS

    for name in ("app.log", "api.log"):
        files = sorted(tmp_path.glob(f"{name}*"))
        lines = [line for path in files for line in path.read_text().splitlines()]
        records = [json.loads(line) for line in lines]  # every line is one whole JSON object
        seen = Counter((record["worker"], record["seq"]) for record in records)
        assert len(seen) == WORKERS * RECORDS and set(seen.values()) == {1}, name
    if rotate_every < 1:
        assert len(list(tmp_path.glob("app.log.*"))) >= 1  # the files really rotated meanwhile

"""Uncaught exceptions: logged at CRITICAL with their traceback, previous hooks still called."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading

import pytest

from telemetry_infra.logs import install_exception_hooks, uninstall_exception_hooks


@pytest.fixture(autouse=True)
def _hooks_removed_afterwards():
    yield
    uninstall_exception_hooks()


def test_uncaught_exception_in_main_thread_is_logged_by_configure(tmp_path):
    script = textwrap.dedent(
        f"""
        import telemetry_infra as ti
        ti.configure(service_name="hooks", environment="production", log_dir={str(tmp_path)!r})
        def main():
            raise ValueError("nobody caught me")
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    (line,) = [json.loads(text) for text in result.stdout.splitlines() if '"CRITICAL"' in text]
    assert line["logger_name"] == "telemetry_infra.uncaught"
    assert "ValueError" in line["message"] and "in main" in line["exc_info"]
    assert "Traceback" not in result.stderr  # the default hook would only repeat it
    assert "nobody caught me" in (tmp_path / "error.log").read_text()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # pytest's chained hook
def test_uncaught_exception_in_a_thread_is_logged(json_lines):
    install_exception_hooks()

    def work():
        raise RuntimeError("thread failed")

    thread = threading.Thread(target=work, name="worker-7")
    thread.start()
    thread.join()
    (line,) = json_lines()
    assert line["level"] == "CRITICAL" and "worker-7" in line["message"]
    assert "RuntimeError: thread failed" in line["exc_info"]


def test_previous_hooks_are_chained_and_install_is_idempotent(json_lines, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc_info: seen.append(exc_info[1]))
    install_exception_hooks()
    install_exception_hooks()
    error = KeyError("k")

    sys.excepthook(KeyError, error, None)
    assert seen == [error]
    assert len(json_lines()) == 1

    uninstall_exception_hooks()
    sys.excepthook(KeyError, error, None)
    assert seen == [error, error] and len(json_lines()) == 1


async def test_running_event_loop_gets_an_exception_handler(json_lines):
    loop = asyncio.get_running_loop()
    install_exception_hooks()

    loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": OSError("io")})
    (line,) = json_lines()
    assert line["level"] == "CRITICAL" and "never retrieved" in line["message"]
    assert "OSError: io" in line["exc_info"]

    uninstall_exception_hooks()
    assert loop.get_exception_handler() is None

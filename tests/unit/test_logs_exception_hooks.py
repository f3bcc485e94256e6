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
    assert result.stderr.count("Traceback") == 1  # as Python prints it: the console is on stdout
    assert "nobody caught me" in (tmp_path / "error.log").read_text()


def _uncaught_in_subprocess(tmp_path, setup: str) -> subprocess.CompletedProcess[str]:
    script = "\n".join(
        [
            "import sys, threading",
            "import telemetry_infra as ti",
            setup,
            "def main():",
            "    raise ValueError('nobody caught me')",
            "main()",
        ]
    )
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_uncaught_exception_without_console_logs_still_reaches_stderr(tmp_path):
    setup = f"ti.configure(service_name='hooks', console_logs=False, log_dir={str(tmp_path)!r})"
    result = _uncaught_in_subprocess(tmp_path, setup)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("Traceback (most recent call last)") == 1
    assert "ValueError: nobody caught me" in result.stderr and "in main" in result.stderr
    assert "nobody caught me" in (tmp_path / "error.log").read_text()


def test_uncaught_exception_is_printed_once_when_the_console_log_is_on_stderr(tmp_path):
    setup = (
        f"ti.configure(service_name='hooks', environment='production', log_dir={str(tmp_path)!r})\n"
        f"ti.setup_logging(log_dir={str(tmp_path)!r}, environment='production', stream=sys.stderr)"
    )
    result = _uncaught_in_subprocess(tmp_path, setup)

    assert result.returncode == 1
    assert result.stderr.count("nobody caught me") == 1, result.stderr  # the JSON line, not a repeat
    assert '"CRITICAL"' in result.stderr


def test_uncaught_exception_in_a_thread_without_console_logs_reaches_stderr(tmp_path):
    setup = (
        f"ti.configure(service_name='hooks', console_logs=False, log_dir={str(tmp_path)!r})\n"
        "def work():\n    raise RuntimeError('thread failed')\n"
        "thread = threading.Thread(target=work, name='worker-7'); thread.start(); thread.join()\n"
        "sys.exit(0)"
    )
    result = _uncaught_in_subprocess(tmp_path, setup)

    assert result.returncode == 0
    assert "worker-7" in result.stderr and "RuntimeError: thread failed" in result.stderr
    assert "thread failed" in (tmp_path / "error.log").read_text()


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

"""A worker forked after configure() (gunicorn --preload) is an instance of its own."""

from __future__ import annotations

import os
import signal
import time
import traceback
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from prometheus_client.parser import text_string_to_metric_families

import telemetry_infra as ti
from telemetry_infra.testing import OTLPReceiver, free_port

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def test_forked_child_exports_its_own_pid_and_instance_id(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    telemetry = ti.configure(
        "forked",
        otlp_endpoint=otlp_receiver.http_endpoint,
        otlp_protocol="http/protobuf",
        log_dir=tmp_path,
        setup_logs=False,
    )
    tracer = trace.get_tracer("tests.fork")
    child = os.fork()
    if child == 0:  # the worker: one span, flushed, then leave without the parent's atexit hooks
        code = 1
        try:
            with tracer.start_as_current_span("in-child"):
                pass
            families = text_string_to_metric_families(telemetry.prometheus_text())
            info = next(f for f in families if f.name == "target_info")
            pid_label = info.samples[0].labels["process_pid"]
            code = 0 if telemetry.force_flush(5) and pid_label == str(os.getpid()) else 2
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's target_info kept the parent's pid"
    with tracer.start_as_current_span("in-parent"):
        pass
    telemetry.force_flush(5)
    (in_child,) = otlp_receiver.wait_for_spans(lambda s: s.name == "in-child")
    (in_parent,) = otlp_receiver.wait_for_spans(lambda s: s.name == "in-parent")
    assert in_child.resource["process.pid"] == child
    assert in_parent.resource["process.pid"] == os.getpid()
    assert in_child.resource["service.instance.id"] != in_parent.resource["service.instance.id"]
    assert in_child.resource["service.name"] == "forked"


def test_forked_child_leaves_the_metrics_port_to_its_parent(tmp_path: Path) -> None:
    port = free_port()
    telemetry = ti.configure("forked-port", prometheus_port=port, log_dir=tmp_path, setup_logs=False)
    child = os.fork()
    if child == 0:  # a gunicorn --preload worker: it does not serve the port, and exits cleanly
        code = 1
        try:
            code = 0 if ti.shutdown(timeout_s=2) else 2
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 15
    while (finished := os.waitpid(child, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the forked child hung in shutdown()")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(finished[1]) == 0
    assert httpx.get(telemetry.metrics_url, timeout=5).status_code == 200

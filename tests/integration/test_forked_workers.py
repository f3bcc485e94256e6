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


@pytest.mark.parametrize("exported_before_fork", [False, True], ids=["cold", "exported-before-fork"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forked_child_exports_its_own_pid_and_instance_id(
    otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str, exported_before_fork: bool
) -> None:
    telemetry = ti.configure(
        "forked",
        otlp_endpoint=otlp_receiver.endpoint(protocol),
        otlp_protocol=protocol,
        log_dir=tmp_path,
        setup_logs=False,
    )
    tracer = trace.get_tracer("tests.fork")
    if exported_before_fork:  # the encoders have met the parent's resource already
        with tracer.start_as_current_span("before-fork"):
            pass
        assert telemetry.force_flush(5)
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


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forked_child_log_records_carry_its_own_pid(
    otlp_receiver: OTLPReceiver, tmp_path: Path, protocol: str
) -> None:
    telemetry = ti.configure(
        "forked-logs",
        otlp_endpoint=otlp_receiver.endpoint(protocol),
        otlp_protocol=protocol,
        log_dir=tmp_path,
        console_logs=False,
    )
    log = ti.get_logger("tests.fork")
    log.warning("before the fork")  # the encoders meet the parent's resource first
    assert telemetry.force_flush(5)
    child = os.fork()
    if child == 0:
        code = 1
        try:
            log.warning("in the child")
            code = 0 if telemetry.force_flush(5) else 2
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (in_child,) = otlp_receiver.wait_for_logs(lambda r: r.body == "in the child")
    (before,) = otlp_receiver.wait_for_logs(lambda r: r.body == "before the fork")
    assert in_child.resource["process.pid"] == child
    assert before.resource["process.pid"] == os.getpid()
    assert in_child.resource["service.instance.id"] != before.resource["service.instance.id"]

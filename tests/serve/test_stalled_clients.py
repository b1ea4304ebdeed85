"""Backpressure measured where it matters: a server process, real gRPC channels with the client's
default settings, and the server's own CPU time and metrics.

A client that reads one image of 5,000 and stops: within 20 s the images computed for it stop
growing, at most the stream window beyond what it read; over the next 10 s the server uses under
10% of one core; a second client's request meanwhile runs at the speed it has on an idle server.
A client that reads one image a second gets every image exactly once."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from polypsynth.serve.client import SamplerClient

pytestmark = pytest.mark.slow
WINDOW, STEPS, WAIT = 8, 2, 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def generated(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT).read().decode()
    return sum(
        float(v) for v in re.findall(r"^polypsynth_images_generated_total\{[^}]*\} (\S+)$", text, re.M)
    )


@pytest.fixture
def server_process(tiny_bundle):
    port, metrics_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "polypsynth.cli",
        "serve",
        "--model",
        f"tiny={tiny_bundle}",
        "--port",
        str(port),
    ]
    cmd += ["--max-batch", "4", "--stream-window", str(WINDOW), "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tiny"), wait_for_ready=True, timeout=WAIT
        )
    yield proc, f"127.0.0.1:{port}", metrics_port
    proc.terminate()
    proc.wait(WAIT)


def test_a_stalled_client_costs_nothing_after_its_window(server_process):
    proc, target, metrics_port = server_process
    with SamplerClient(target) as fast, SamplerClient(target) as stalling:
        start = time.perf_counter()
        assert sorted(m.index for m in fast.generate("tiny", "NON_AD", 24, steps=STEPS)) == list(range(24))
        idle_seconds = time.perf_counter() - start
        before = generated(metrics_port)
        stalled = stalling.generate("tiny", "AD", 5000, steps=STEPS)
        next(stalled)  # read one image, then nothing
        deadline, last = time.monotonic() + 20, -1.0
        while time.monotonic() < deadline:
            now = generated(metrics_port) - before
            if now == last:
                break
            last = now
            time.sleep(2)
        assert now == last, "the images computed for the stalled client still grow after 20 s"
        assert now <= 1 + WINDOW, f"{now} images computed for a client that read 1 (window {WINDOW})"
        cpu = cpu_seconds(proc.pid)
        time.sleep(10)
        share = (cpu_seconds(proc.pid) - cpu) / 10
        assert share < 0.10, f"the server used {share:.0%} of a core for a stalled client"
        # Meanwhile another client is served at the speed an idle server gives it.
        start = time.perf_counter()
        assert sorted(m.index for m in fast.generate("tiny", "NON_AD", 24, steps=STEPS)) == list(range(24))
        assert time.perf_counter() - start < 2 * idle_seconds + 1.0
        assert generated(metrics_port) - before == now + 24  # nothing more for the stalled one
        stalled.cancel()


def test_a_slow_reader_gets_every_image_once(server_process):
    _, target, _ = server_process
    with SamplerClient(target) as client:
        got = []
        for image in client.generate("tiny", "AD", 12, seed=4, steps=STEPS):
            got.append((image.index, image.seed))
            time.sleep(1.0 if len(got) <= 4 else 0.0)  # one a second for a while, then at once
    assert sorted(got) == [(i, 4 + i) for i in range(12)]

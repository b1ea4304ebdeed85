"""Faults across processes: a server killed with SIGKILL mid-stream and restarted, and a client
process killed mid-stream."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from polypsynth.sampling.model import open_model
from polypsynth.sampling.request import make_params, make_request
from polypsynth.sampling.to_folder import sample_to_folder
from polypsynth.serve.client import SamplerClient
from polypsynth.serve.server import SamplerServer, ServerOptions
from polypsynth.serve.to_folder import write_folder

pytestmark = pytest.mark.slow
WAIT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle, port, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "polypsynth.cli", "serve", "--model", f"tiny={bundle}"]
    cmd += ["--port", str(port), "--max-batch", "4", "--max-wait-ms", "5", "--stream-window", "4", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tiny"), wait_for_ready=True, timeout=WAIT
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return proc


def test_generate_survives_a_killed_and_restarted_server(tiny_bundle, tmp_path):
    port = free_port()
    servers = [start_server(tiny_bundle, port)]
    received, restarted = [0], threading.Event()

    def progress(n):
        received[0] += n
        if received[0] >= 10 and len(servers) == 1:  # mid-stream: kill -9, then start anew
            servers[0].send_signal(signal.SIGKILL)
            servers[0].wait(WAIT)

            def restart():
                servers.append(start_server(tiny_bundle, port))
                restarted.set()

            servers.append(None)
            threading.Thread(target=restart, daemon=True).start()

    try:
        with SamplerClient(f"127.0.0.1:{port}") as c:
            folder = write_folder(
                c,
                tmp_path / "remote",
                "tiny",
                make_request("AD", 40, seed=11, steps=2),
                progress=progress,
                retries=30,
                backoff=(0.2, 1.0),
            )
        # The folder can be complete, from the new server, before the restart thread has seen it healthy.
        assert restarted.wait(WAIT) and servers[0].returncode == -signal.SIGKILL
    finally:
        for proc in servers:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(WAIT)
    local = sample_to_folder(
        open_model(tiny_bundle, "onnxruntime"),
        make_params("AD", 40, seed=11, steps=2, guidance=3.0, scheduler="dpm++"),
        tmp_path / "local",
    )
    names = sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == names and len(names) == 42  # + jsonl, marker
    for name in names[1:-1]:  # the PNGs
        assert (folder / name).read_bytes() == (local / name).read_bytes(), name
    remote_rows = sorted((folder / "samples.jsonl").read_text().splitlines())
    assert remote_rows == sorted((local / "samples.jsonl").read_text().splitlines())
    assert sorted(json.loads(r)["index"] for r in remote_rows) == list(range(40))  # each exactly once


CLIENT = """
import sys
from polypsynth.serve.client import SamplerClient
c = SamplerClient(sys.argv[1])
stream = c.generate("tiny", "AD", 10000, steps=20)
next(stream)
print("streaming", flush=True)
sys.stdin.read()
"""


def test_a_killed_client_frees_its_queued_work(tiny_bundle, wait_until):
    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=4)).start()
    batcher = server.models["tiny"].batcher
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT, f"127.0.0.1:{server.port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout.readline().strip() == "streaming"
        assert batcher.stats().queued > 9000
        proc.kill()
        proc.wait(WAIT)
        # ~10,000 images of 20 steps would take many minutes to finish without the disconnect.
        wait_until(lambda: batcher.stats().jobs == 0, "the disconnected request to be dropped", 30)
        stats = batcher.stats()
        assert (stats.jobs, stats.queued, stats.buffered) == (0, 0, 0)
    finally:
        server.stop(grace=1)


def test_one_request_spread_over_two_servers_survives_losing_one(tiny_bundle, tmp_path):
    """generate --server A,B: one of them killed mid-request, the other draws the rest; the folder
    is `sample`'s, each image exactly once."""
    from click.testing import CliRunner

    from polypsynth.cli import main

    ports = [free_port(), free_port()]
    procs = [start_server(tiny_bundle, p) for p in ports]
    received = [0]

    def progress(n):
        received[0] += n
        if received[0] >= 12 and procs[0].poll() is None:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(WAIT)

    addresses = [f"127.0.0.1:{p}" for p in ports]
    clients = {a: SamplerClient(a) for a in addresses}
    try:
        folder = write_folder(
            clients,
            tmp_path / "remote",
            "tiny",
            make_request("AD", 60, seed=5, steps=2),
            progress=progress,
            retries=2,
            backoff=(0.1, 0.2),
            chunk=8,
        )
        assert procs[0].returncode == -signal.SIGKILL
        # A list naming a server that does not answer is refused before anything is written.
        result = CliRunner().invoke(
            main,
            [
                "generate",
                "--server",
                f"{addresses[1]},127.0.0.1:{ports[0]}",
                "--model",
                "tiny",
                "--class",
                "AD",
            ]
            + ["--count", "4", "--out", str(tmp_path / "refused")],
        )
        assert result.exit_code == 1
        assert f"server 127.0.0.1:{ports[0]}: UNAVAILABLE" in result.output
        assert "every server of --server must answer before a request is spread over them" in result.output
        assert not (tmp_path / "refused").exists()
    finally:
        for c in clients.values():
            c.close()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(WAIT)
    local = sample_to_folder(
        open_model(tiny_bundle, "onnxruntime"),
        make_params("AD", 60, seed=5, steps=2, guidance=3.0, scheduler="dpm++"),
        tmp_path / "local",
    )
    names = sorted(p.name for p in local.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == names and len(names) == 62  # + jsonl, marker
    for name in names[1:-1]:  # the PNGs
        assert (folder / name).read_bytes() == (local / name).read_bytes(), name
    rows = sorted((folder / "samples.jsonl").read_text().splitlines())
    assert rows == sorted((local / "samples.jsonl").read_text().splitlines())
    assert sorted(json.loads(r)["index"] for r in rows) == list(range(60))  # each exactly once


def test_sigterm_under_load_ends_every_stream_and_exits_cleanly(tiny_bundle):
    """SIGTERM with a stalled, a slow and a fast client streaming, batches long enough (300 steps)
    that one is running when the grace period ends: every stream ends with UNAVAILABLE or CANCELLED
    and a message, the process exits 0 with no native abort, and a new server serves at once."""
    port = free_port()
    proc = start_server(tiny_bundle, port, "--grace", "2")
    ended, progress = {}, {"slow": 0, "fast": 0}
    with SamplerClient(f"127.0.0.1:{port}") as client:
        stalled = client.generate("tiny", "AD", 2000, steps=300)
        next(stalled)

        def read(name, pause):
            try:
                for _ in client.generate("tiny", "NON_AD", 2000, seed=len(name), steps=300):
                    progress[name] += 1
                    time.sleep(pause)
            except grpc.RpcError as exc:
                ended[name] = (exc.code(), exc.details())

        readers = [threading.Thread(target=read, args=a) for a in (("slow", 1.0), ("fast", 0.0))]
        for t in readers:
            t.start()
        deadline = time.monotonic() + WAIT
        while progress["fast"] < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
        stderr = proc.stderr.read().decode()
        for t in readers:
            t.join(WAIT)
        try:  # what the stalled client holds, then the status (gRPC hands it over after the messages)
            for _ in stalled:
                pass
        except grpc.RpcError as exc:
            ended["stalled"] = (exc.code(), exc.details())
    assert "terminate called" not in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert "signal 15: shutting down gracefully" in stderr
    assert set(ended) == {"stalled", "slow", "fast"}
    for name, (code, details) in ended.items():
        assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), (name, code)
        assert details, name
    restarted = start_server(tiny_bundle, port)  # the port is free again at once
    try:
        with SamplerClient(f"127.0.0.1:{port}") as client:
            assert len(list(client.generate("tiny", "AD", 3, steps=2))) == 3
    finally:
        restarted.terminate()
        restarted.wait(WAIT)

"""gRPC end to end against in-process sampling, interactive latency under bulk load, and a
bounded load test.

    python benchmarks/bench_grpc.py [--images 64] [--steps 10] [--load-rounds 2]

The demo's tiny model (random weights) exported to an ONNX bundle and served in-process on
loopback (onnxruntime CPU, max batch 8): images/s with 1, 4 and 8 concurrent clients divided by
in-process sampling at the same batch size (the cost of the service), and p50/p99 latency of
1-image requests issued while an 8-client bulk load runs. Then the load test of grpc_load.py:
16 clients with counts 1-200, some cancelling, some with deadlines, every image checked against
the local sampler, against `polypsynth serve` in its own process; run `--load-rounds` times to see
that the server process's memory stays flat, with the p99 latency of 1-image requests under that
load in batch times (the goal: at most 2).
Writes benchmarks/results/grpc.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import psutil  # noqa: E402
from common import RESULTS, write_result  # noqa: E402
from grpc_load import MetricsView, run_load  # noqa: E402

CONFIG = Path(__file__).parents[1] / "configs" / "phantom-tiny.yaml"
MAX_BATCH = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_rounds(bundle: Path, model, args, batch_seconds: float) -> tuple[list[dict], float]:
    """The load test against `polypsynth serve` in its own process (as in production: the
    clients' threads do not share the server's interpreter), its memory read from that process."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, metrics_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "polypsynth.cli", "serve", "--model", f"tiny={bundle}", "--port", str(port)]
    cmd += ["--max-batch", str(MAX_BATCH), "--max-wait-ms", "10", "--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tiny"), wait_for_ready=True, timeout=120
            )
        server = psutil.Process(proc.pid)
        view = MetricsView("tiny", url=f"http://127.0.0.1:{metrics_port}/metrics")
        rss_start = server.memory_info().rss / 2**20
        rounds = []
        for r in range(args.load_rounds):
            figures = run_load(
                f"127.0.0.1:{port}",
                view,
                model,
                clients=16,
                max_count=200,
                steps=args.steps,
                seed=r,
                probe_gap_s=2 * batch_seconds,
            )
            figures["server_rss_mb_after"] = server.memory_info().rss / 2**20
            rounds.append(figures)
            print("load round", r, {k: v for k, v in figures.items() if k != "errors"}, flush=True)
            for e in figures["errors"]:
                print("  ERROR", e, flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return rounds, rss_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--load-rounds", type=int, default=2, help="rounds of the 16-client load test")
    args = parser.parse_args()

    from polypsynth.config import load_config
    from polypsynth.export.bundle import export_bundle
    from polypsynth.models import build_tiny, save_components
    from polypsynth.sampling.loop import sample_images
    from polypsynth.sampling.model import open_model
    from polypsynth.sampling.request import make_params
    from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
    from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2_grpc as pb_grpc
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.server import SamplerServer, ServerOptions

    cfg = load_config(CONFIG)
    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    save_components(build_tiny(cfg.model.tiny, cfg.model.resolution), tmp / "ckpt")
    export_bundle(tmp / "ckpt", tmp / "bundle")
    model = open_model(tmp / "bundle", "onnxruntime")
    sample_images(model, make_params("AD", MAX_BATCH, steps=args.steps), batch_size=MAX_BATCH)  # warm-up
    start = time.perf_counter()
    sample_images(model, make_params("AD", args.images, steps=args.steps), batch_size=MAX_BATCH)
    in_process = args.images / (time.perf_counter() - start)
    batch_seconds = MAX_BATCH / in_process

    server = SamplerServer(
        {}, ServerOptions(port=0, max_batch=MAX_BATCH, max_wait_ms=10), loaded={"tiny": model}
    ).start()
    target = f"127.0.0.1:{server.port}"
    with SamplerClient(target) as c:  # warm-up: connection, the server's first batches
        for _ in c.generate("tiny", "AD", 2 * MAX_BATCH, seed=99_999, steps=args.steps):
            pass
    rows = {}
    try:
        for clients in (1, 4, 8):
            per = args.images // clients

            def pull(i, per=per):
                with SamplerClient(target) as c:
                    for _ in c.generate("tiny", "AD", per, seed=i * 10_000, steps=args.steps):
                        pass

            threads = [threading.Thread(target=pull, args=(i,)) for i in range(clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = per * clients / (time.perf_counter() - start)
            rows[clients] = {"images_per_second": rate, "grpc_over_in_process": rate / in_process}
            print(clients, rows[clients], flush=True)

        # The same 8 clients over the plain Generate (no credit): what the credit costs a fast client.
        def pull_plain(i, per=args.images // 8):
            with grpc.insecure_channel(target) as channel:
                stub = pb_grpc.SamplerServiceStub(channel)
                request = pb.GenerateRequest(
                    model="tiny", class_name="AD", count=per, seed=i * 10_000, steps=args.steps
                )
                for _ in stub.Generate(request):
                    pass

        threads = [threading.Thread(target=pull_plain, args=(i,)) for i in range(8)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        plain = (args.images // 8) * 8 / (time.perf_counter() - start)
        credit_cost = {
            "plain_generate_images_per_second": plain,
            "credit_over_plain": rows[8]["images_per_second"] / plain,
        }
        print("8 plain", credit_cost, flush=True)

        # Latency of 1-image requests while 8 clients pull in bulk.
        stop = threading.Event()

        def bulk(i):
            with SamplerClient(target) as c:
                while not stop.is_set():
                    for _ in c.generate("tiny", "NON_AD", 4 * MAX_BATCH, seed=i, steps=args.steps):
                        if stop.is_set():
                            break

        load = [threading.Thread(target=bulk, args=(i,), daemon=True) for i in range(8)]
        for t in load:
            t.start()
        time.sleep(1.0)
        latencies = []
        with SamplerClient(target) as c:
            for i in range(20):
                t0 = time.perf_counter()
                list(c.generate("tiny", "AD", 1, seed=100 + i, steps=args.steps))
                latencies.append(time.perf_counter() - t0)
        stop.set()
        idle = []
        for t in load:
            t.join(60)
        with SamplerClient(target) as c:
            for i in range(10):
                t0 = time.perf_counter()
                list(c.generate("tiny", "AD", 1, seed=200 + i, steps=args.steps))
                idle.append(time.perf_counter() - t0)

    finally:
        server.stop(grace=1)
    rounds, rss_start = load_rounds(tmp / "bundle", model, args, batch_seconds)
    lat = {
        "under_load_p50_s": float(np.percentile(latencies, 50)),
        "under_load_p99_s": float(np.percentile(latencies, 99)),
        "idle_p50_s": float(np.percentile(idle, 50)),
    }
    previous_file = RESULTS / "grpc.json"
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else None
    path = write_result(
        "grpc",
        {
            "steps": args.steps,
            "credit": credit_cost,
            "max_batch": MAX_BATCH,
            "in_process_images_per_second": in_process,
            "clients": rows,
            "latency": lat,
            "batch_seconds": batch_seconds,
            "load": rounds,
            "load_server_rss_mb_start": rss_start,
        },
    )
    print(f"\nin-process sampling, batch {MAX_BATCH}: {in_process:.2f} images/s\n")
    was = (previous or {}).get("clients", {})
    print(
        f"| clients | gRPC images/s | gRPC / in-process | previous run ({(previous or {}).get('date', 'none')}) |"
    )
    print("|---|---|---|---|")
    for n, r in rows.items():
        before = was.get(str(n), {}).get("grpc_over_in_process")
        shown = f"{before:.2f}" if before is not None else "-"
        print(f"| {n} | {r['images_per_second']:.2f} | {r['grpc_over_in_process']:.2f} | {shown} |")
    print(
        f"\n8 clients with credit (GenerateWithCredit) / without (Generate): {credit_cost['credit_over_plain']:.2f} "
        f"({rows[8]['images_per_second']:.2f} vs {credit_cost['plain_generate_images_per_second']:.2f} images/s)"
    )
    print(
        f"\n1-image requests under an 8-client bulk load: p50 {lat['under_load_p50_s']:.2f} s, p99 {lat['under_load_p99_s']:.2f} s "
        f"(idle p50 {lat['idle_p50_s']:.2f} s)"
    )
    print(
        f"\nload test, 16 clients (counts 1-200, 3 cancelling, 3 with a {rounds[0]['deadline_s'] if rounds else 2} s deadline), "
        f"idle in-process batch time {batch_seconds:.3f} s:\n"
        f"server (own process) RSS at start {rss_start:.0f} MB\n"
        "| round | images | images/s | cancelled | deadline exceeded | batch time under load | "
        "1-image p50 / p99 | p99 in batch times | server RSS after | errors |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    for r, f in enumerate(rounds):
        print(
            f"| {r + 1} | {f['delivered_images']}/{f['requested_images']} | {f['images_per_second']:.1f} | "
            f"{f['cancelled']} | {f['deadline_exceeded']} | {f['mean_batch_s']:.3f} s | "
            f"{f['probe_p50_s']:.3f} / {f['probe_p99_s']:.3f} s | {f['probe_p99_in_batch_times']:.2f} | "
            f"{f['server_rss_mb_after']:.0f} MB | {len(f['errors'])} |"
        )
    print(f"({path})")
    if any(f["errors"] for f in rounds):
        sys.exit(1)


if __name__ == "__main__":
    main()

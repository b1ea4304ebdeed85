"""A bounded load test of a running SamplerService (loopback only; stops by itself).

`run_load` starts `clients` concurrent clients with mixed counts (1 .. max_count): most read
every image, some cancel part-way and some carry a deadline. While they run, a probe issues
1-image requests one at a time, at random moments, and records their latency. Every image that arrives is
checked against the local sampler (same seed, same bytes) and each index must arrive exactly
once; a client that was not cancelled and met its deadline must receive all of its images.
Afterwards the server's queue must be empty. Used by benchmarks/bench_grpc.py (`--load`) and,
shorter, by tests/serve/test_load.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np


@dataclass
class ClientPlan:
    count: int
    seed: int
    class_name: str
    cancel_after: int | None = None  # images read before cancelling
    deadline_s: float | None = None


@dataclass
class ClientResult:
    plan: ClientPlan
    images: dict = field(default_factory=dict)  # index -> (seed, RGB8 bytes)
    duplicates: int = 0
    code: str = "OK"


def plan_clients(clients: int, max_count: int, seed: int = 0, deadline_s: float = 2.0) -> list[ClientPlan]:
    """Counts drawn in 1 .. max_count; every fifth client cancels, every fifth (offset) has a deadline."""
    rng = np.random.default_rng(seed)
    plans = []
    for i in range(clients):
        count = int(rng.integers(1, max_count + 1))
        plan = ClientPlan(count, 100_000 * (i + 1), "AD" if i % 2 else "NON_AD")
        if i % 5 == 1:
            plan.count = max(plan.count, 4)
            plan.cancel_after = int(rng.integers(1, plan.count))
        elif i % 5 == 3:
            plan.deadline_s = deadline_s
        plans.append(plan)
    return plans


def _run_client(target: str, model: str, plan: ClientPlan, steps: int, result: ClientResult) -> None:
    from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
    from polypsynth.serve.client import SamplerClient

    with SamplerClient(target) as client:
        stream = client.generate(
            model,
            plan.class_name,
            plan.count,
            seed=plan.seed,
            steps=steps,
            encoding=pb.ENCODING_RGB8,
            timeout=plan.deadline_s,
        )
        try:
            for image in stream:
                if image.index in result.images:
                    result.duplicates += 1
                result.images[image.index] = (image.seed, image.data)
                if plan.cancel_after is not None and len(result.images) >= plan.cancel_after:
                    stream.cancel()
                    result.code = "CANCELLED"
                    return
        except grpc.RpcError as exc:
            result.code = exc.code().name


def _probe(target: str, model: str, steps: int, stop: threading.Event, latencies: list, gap_s: float) -> None:
    """1-image requests at random moments (a uniform pause of up to `gap_s` after each), so they
    arrive anywhere within a running batch rather than always just after one started."""
    from polypsynth.serve.client import SamplerClient

    rng = np.random.default_rng(1)
    with SamplerClient(target) as client:
        i = 0
        while not stop.wait(rng.uniform(0, gap_s)):
            start = time.perf_counter()
            list(client.generate(model, "AD", 1, seed=9_000_000 + i, steps=steps))
            latencies.append(time.perf_counter() - start)
            i += 1


def reference_images(model, results: list[ClientResult], steps: int, batch: int = 16) -> dict:
    """Local images for every (seed, class) that arrived, in batches of one class."""
    from polypsynth.sampling.loop import sample_batch
    from polypsynth.sampling.request import Settings

    wanted: dict[str, set[int]] = {}
    for r in results:
        wanted.setdefault(r.plan.class_name, set()).update(r.plan.seed + i for i in r.images)
    reference = {}
    for class_name, seeds in wanted.items():
        ordered = sorted(seeds)
        for k in range(0, len(ordered), batch):
            chunk = ordered[k : k + batch]
            for s, pixels in zip(
                chunk,
                sample_batch(model, chunk, [class_name] * len(chunk), Settings(steps, 3.0, "dpm++")),
                strict=True,
            ):
                reference[(class_name, s)] = pixels.tobytes()
    return reference


class MetricsView:
    """A server's Prometheus samples for one model: from its registry (in-process) or scraped
    from its /metrics endpoint (a server in another process)."""

    def __init__(self, model_name: str, registry=None, url: str | None = None):
        self.model_name, self.registry, self.url = model_name, registry, url

    def sample(self, name: str) -> float:
        labels = {"model": self.model_name}
        if self.registry is not None:
            return self.registry.get_sample_value(name, labels) or 0.0
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.url, timeout=30).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        return 0.0


def run_load(
    target: str,
    view: MetricsView,
    local_model,
    batcher=None,
    clients: int = 16,
    max_count: int = 200,
    steps: int = 2,
    seed: int = 0,
    deadline_s: float = 2.0,
    timeout_s: float = 300.0,
    probe_gap_s: float = 0.1,
) -> dict:
    """Run the load against the server at `target`; returns the figures and `errors`. `view`
    reads its metrics; given its `batcher` (in-process), the per-request window is checked too."""
    model_name = view.model_name
    plans = plan_clients(clients, max_count, seed, deadline_s)
    results = [ClientResult(p) for p in plans]
    stop, latencies = threading.Event(), []
    probe = threading.Thread(
        target=_probe, args=(target, model_name, steps, stop, latencies, probe_gap_s), daemon=True
    )
    threads = [
        threading.Thread(target=_run_client, args=(target, model_name, p, steps, r), daemon=True)
        for p, r in zip(plans, results, strict=True)
    ]

    def batch_totals():
        return view.sample("polypsynth_batch_seconds_sum"), view.sample("polypsynth_batch_seconds_count")

    before = batch_totals()
    start = time.perf_counter()
    for t in threads:
        t.start()
    probe.start()
    errors = []
    for t in threads:
        t.join(max(0.0, timeout_s - (time.perf_counter() - start)))
        if t.is_alive():
            errors.append("a client did not finish within the time limit")
            break
    seconds = time.perf_counter() - start
    stop.set()
    probe.join(timeout_s)
    after = batch_totals()
    batches = after[1] - before[1]
    batch_s = (after[0] - before[0]) / batches if batches else None
    # After every request ended (cancelled ones included) the queue is empty.
    gauges = ("polypsynth_queued_images", "polypsynth_buffered_images", "polypsynth_in_flight_images")
    for _ in range(int(timeout_s * 10)):
        left = {g: view.sample(g) for g in gauges}
        if batcher is not None:
            left["requests held by the batcher"] = batcher.stats().jobs
        if not any(left.values()):
            break
        time.sleep(0.1)
    if any(left.values()):
        errors.append(f"queue not empty after the load: {left}")
    peak, window = None, None
    if batcher is not None:
        peak, window = batcher.stats().peak_outstanding, batcher.window
        if peak > window:
            errors.append(f"a request had {peak} images outstanding, window {window}")

    reference = reference_images(local_model, results, steps)
    for i, r in enumerate(results):
        p = r.plan
        if r.duplicates:
            errors.append(f"client {i}: {r.duplicates} images arrived twice")
        for index, (got_seed, data) in r.images.items():
            if not 0 <= index < p.count or got_seed != p.seed + index:
                errors.append(f"client {i}: image {index} with seed {got_seed} is not one it asked for")
            elif data != reference[(p.class_name, got_seed)]:
                errors.append(f"client {i}: image {index} differs from the local sampler's")
        complete = len(r.images) == p.count
        if r.code == "OK" and not complete:
            errors.append(f"client {i}: the stream ended OK with {len(r.images)} of {p.count} images")
        if p.cancel_after is None and p.deadline_s is None and r.code != "OK":
            errors.append(f"client {i}: ended with {r.code}")
        if p.deadline_s is not None and r.code not in ("OK", "DEADLINE_EXCEEDED"):
            errors.append(f"client {i}: a deadline request ended with {r.code}")
    delivered = sum(len(r.images) for r in results)
    return {
        "clients": clients,
        "deadline_s": deadline_s,
        "requested_images": sum(p.count for p in plans),
        "delivered_images": delivered,
        "cancelled": sum(r.code == "CANCELLED" for r in results),
        "deadline_exceeded": sum(r.code == "DEADLINE_EXCEEDED" for r in results),
        "seconds": seconds,
        "images_per_second": delivered / seconds,
        "probe_requests": len(latencies),
        "probe_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "probe_p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "batches": int(batches),
        "mean_batch_s": batch_s,
        "probe_p99_in_batch_times": (
            float(np.percentile(latencies, 99)) / batch_s if latencies and batch_s else None
        ),
        "peak_outstanding": peak,
        "window": window,
        "errors": errors,
    }

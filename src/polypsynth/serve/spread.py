"""One request over several servers (`generate --server A,B,...`): the images still missing from
the folder are cut into ranges of `CHUNK` indices, and one worker per server pulls ranges from a
shared queue and asks its server for them (`first_index`, `count`). Image i is drawn from seed
+ i whichever server draws it, so the folder is the same as `polypsynth sample`'s.

A server that goes away mid-range hands the indices it did not deliver back to the queue, and is
tried again with backoff up to `retries` times in a row; the other servers take the work meanwhile.
The request fails only when every server has given up (or one answers with an error that is not
about availability: a bad request is bad on every server). Every server must serve the same model
(hash, backend, defaults) before anything is asked: a folder holds one model's images."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.output import ImageFolderWriter
from polypsynth.serve.client import RETRYABLE, SamplerClient

CHUNK = 32  # indices per request: small enough to rebalance, large enough to fill a server's batches
log = logging.getLogger("polypsynth.serve")


def _ranges(indices: Sequence[int], chunk: int) -> list[tuple[int, int]]:
    """Sorted indices as [start, stop) ranges of at most `chunk` consecutive indices."""
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and out[-1][1] == i and i - out[-1][0] < chunk:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


class _Work:
    """The ranges still to draw, shared by the workers."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.pending = deque(ranges)
        self.in_flight = 0
        self.fatal: BaseException | None = None
        self.cond = threading.Condition()

    def take(self) -> tuple[int, int] | None:
        with self.cond:
            while not self.pending and self.in_flight and self.fatal is None:
                self.cond.wait()
            if not self.pending or self.fatal is not None:
                return None
            self.in_flight += 1
            return self.pending.popleft()

    def finish(self, back: list[tuple[int, int]]) -> None:
        with self.cond:
            self.in_flight -= 1
            self.pending.extendleft(reversed(back))  # the earliest indices first
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.fatal = self.fatal or exc
            self.cond.notify_all()


def write_folder_spread(
    clients: dict[str, SamplerClient],
    out: str | Path,
    model: str,
    class_name: str,
    count: int,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str = "",
    progress: Callable[[int], None] | None = None,
    retries: int = 5,
    backoff: tuple[float, float] = (0.5, 10.0),
    chunk: int = CHUNK,
) -> Path:
    """Write OUT/<class>/ from every server in `clients` (address -> client); resumable like
    SamplerClient.write_folder."""
    provenances = {}
    for address, client in clients.items():
        try:
            provenances[address] = client.provenance(model, class_name, steps, guidance, scheduler)
        except grpc.RpcError as exc:
            raise PolypsynthError(
                f"server {address}: {exc.code().name}: {exc.details()} (every server of --server must answer "
                "before a request is spread over them)"
            ) from exc
    first = next(iter(provenances.values()))
    differing = {a: p for a, p in provenances.items() if p != first}
    if differing:
        shown = "; ".join(
            f"{a}: model {p.model_hash[:12]}, backend {p.backend}" for a, p in provenances.items()
        )
        raise PolypsynthError(
            f"the servers do not serve the same model {model!r} ({shown}); one folder holds one model's images"
        )
    writer = ImageFolderWriter(Path(out) / class_name, first, seed)
    done = writer.done()
    if progress:
        progress(len(done))
    work = _Work(_ranges([i for i in range(count) if i not in done], chunk))
    lock = threading.Lock()
    gave_up: dict[str, str] = {}

    def deliver(image) -> None:
        if image.model_hash != first.model_hash:
            raise PolypsynthError(
                f"server answered with model {image.model_hash}, expected {first.model_hash}"
            )
        with lock:
            if image.index in done:
                return
            writer.write(image.index, image.seed, png=image.data)
            done.add(image.index)
        if progress:
            progress(1)

    def worker(address: str, client: SamplerClient) -> None:
        failures = 0
        while (span := work.take()) is not None:
            start, stop = span
            try:
                stream = client.generate(
                    model, class_name, stop - start, seed, steps, guidance, scheduler, first_index=start
                )
                for image in stream:
                    deliver(image)
                    failures = 0
                work.finish(_ranges([i for i in range(start, stop) if i not in done], chunk))
            except grpc.RpcError as exc:
                work.finish(_ranges([i for i in range(start, stop) if i not in done], chunk))
                if exc.code() not in RETRYABLE:
                    work.fail(PolypsynthError(f"server {address}: {exc.code().name}: {exc.details()}"))
                    return
                failures += 1
                if failures > retries:
                    gave_up[address] = f"{exc.code().name}: {exc.details()}"
                    log.warning("%s: giving up after %d attempts in a row", address, failures)
                    return
                wait = min(backoff[1], backoff[0] * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "%s: %s; retry %d of %d in %.1f s", address, exc.code().name, failures, retries, wait
                )
                time.sleep(wait)
            except BaseException as exc:  # a local fault (disk full, bad image): stop everyone
                work.finish([])
                work.fail(exc)
                return

    threads = [
        threading.Thread(target=worker, args=(a, c), name=f"generate {a}", daemon=True)
        for a, c in clients.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if work.fatal is not None:
        raise work.fatal
    if len(done) < count:
        missing = next(i for i in range(count) if i not in done)
        reasons = "; ".join(f"{a}: {why}" for a, why in gave_up.items())
        raise PolypsynthError(
            f"every server gave up with {count - len(done)} of {count} images missing (first: {missing}): {reasons}"
        )
    return writer.folder

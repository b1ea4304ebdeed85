"""`polypsynth generate`: the images of one request pulled from one or several servers into
OUT/<class>/, the same folder `polypsynth sample` writes (image i is drawn from seed + i whichever
server draws it). The folder is resumable: a re-run skips the images on disk. It is locked while
written, and marked incomplete, with the command that completes it, until every image is there
(sampling.output.ResumableFolder).

The images still missing are cut into ranges of consecutive indices (of at most `CHUNK` with
several servers), and one worker per server pulls ranges from a shared queue and asks its server
for them (`first_index`, `count`). A server that goes away mid-range hands the indices it did not
deliver back to the queue, and is tried again with exponential backoff up to `retries` times in a
row (an attempt that delivers images resets the count); the other servers take the work meanwhile.
The request fails only when every server has given up, or one answers with an error that is not
about availability (a bad request is bad on every server). Every server must serve the same model
(hash, backend, defaults) before anything is asked: a folder holds one model's images."""

from __future__ import annotations

import logging
import random
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.output import Provenance, ResumableFolder
from polypsynth.sampling.request import Draw, Given, Params, Request
from polypsynth.serve.client import RETRYABLE, SamplerClient
from polypsynth.serve.wire import provenance_of, settings_from_proto

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


def complete_command(out, servers: Sequence[str], model: str, request: Request) -> str:
    """The `polypsynth generate` command line that completes this request's folder."""
    draw, given = request.draw, request.given
    args = ["polypsynth", "generate", "--server", ",".join(servers), "--model", model]
    args += ["--class", draw.class_name, "--count", str(draw.count), "--seed", str(draw.seed)]
    for flag, value in (
        ("--steps", given.steps),
        ("--guidance", given.guidance),
        ("--scheduler", given.scheduler),
    ):
        if value is not None and value != "":
            args += [flag, str(value)]
    return shlex.join([*args, "--out", str(out)])


def backoff_wait(backoff: tuple[float, float], attempt: int) -> float:
    """Seconds before retry `attempt` + 1: exponential from backoff[0], capped at backoff[1], with
    jitter (so clients that lost one server do not come back in step)."""
    return min(backoff[1], backoff[0] * 2**attempt) * random.uniform(0.5, 1.0)


def _with_retries(fn: Callable, address: str, retries: int, backoff: tuple[float, float]):
    """fn() retried while the server is unavailable, with exponential backoff and jitter."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or attempt == retries:
                raise
            wait = backoff_wait(backoff, attempt)
            log.warning(
                "%s: %s; retry %d of %d in %.1f s", address, exc.code().name, attempt + 1, retries, wait
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def _resolve(
    clients: dict[str, SamplerClient], model: str, request: Request, retries: int, backoff
) -> tuple[Params, Provenance]:
    """The request as every server would draw it (its settings, else the model's defaults as
    GetModel reports them) and the provenance that gives; refused before anything is written
    when a server does not answer, does not serve the class, or serves another model."""
    resolved: dict[str, tuple[Params, Provenance]] = {}
    class_name = request.draw.class_name
    for address, client in clients.items():
        try:
            info = _with_retries(lambda c=client: c.get_model(model), address, retries, backoff)
        except grpc.RpcError as exc:
            every = " (every server of --server must answer before a request is spread over them)"
            hint = client.unreachable_hint() if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
            raise PolypsynthError(
                f"server {address}: {exc.code().name}: {hint or exc.details()}"
                + (every if len(clients) > 1 else "")
            ) from exc
        if class_name not in info.classes:
            raise PolypsynthError(
                f"--class {class_name!r}: model {model!r} on {address} has classes {', '.join(info.classes)}"
            )
        params = request.resolve(settings_from_proto(info.defaults))
        resolved[address] = params, Provenance.of(params, model_hash=info.model_hash, backend=info.backend)
    first = next(iter(resolved.values()))
    if any(p != first[1] for _, p in resolved.values()):
        shown = "; ".join(
            f"{a}: model {p.model_hash[:12]}, backend {p.backend}" for a, (_, p) in resolved.items()
        )
        raise PolypsynthError(
            f"the servers do not serve the same model {model!r} ({shown}); one folder holds one model's images"
        )
    return first


def write_folder(
    clients: SamplerClient | dict[str, SamplerClient],
    out: str | Path,
    model: str,
    request: Request,
    *,
    progress: Callable[[int], None] | None = None,
    retries: int = 5,
    backoff: tuple[float, float] = (0.5, 10.0),
    chunk: int | None = None,
    complete_with: str | None = None,
) -> Path:
    """Write images 0 .. count-1 of `request` into OUT/<class>/ from every server in `clients`
    (one client, or address -> client); returns the class folder. `complete_with` is the command
    line the incomplete marker shows (default: one built from the request)."""
    if isinstance(clients, SamplerClient):
        clients = {clients.target: clients}
    count = request.draw.count
    if chunk is None:
        chunk = CHUNK if len(clients) > 1 else max(count, 1)  # one server: one request per gap
    folder = Path(out) / request.draw.class_name
    params, provenance = _resolve(clients, model, request, retries, backoff)
    command = complete_with or complete_command(out, list(clients), model, request)
    with ResumableFolder(folder, provenance, request.draw.seed, count, command) as target:
        if progress:
            progress(count - len(target.missing()))  # what an earlier run left on disk
        puller = _Puller(
            model, params, target, progress, retries, backoff, chunk, _Work(_ranges(target.missing(), chunk))
        )
        _pull(clients, puller)
    return folder


def _pull(clients: dict[str, SamplerClient], puller: _Puller) -> None:
    """The workers, one per server, until every index of the folder is there or all gave up."""
    threads = [
        threading.Thread(target=puller.worker, args=(a, c), name=f"generate {a}", daemon=True)
        for a, c in clients.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if puller.work.fatal is not None:
        raise puller.work.fatal
    target = puller.target
    missing = target.missing()
    if missing:
        reasons = "; ".join(f"{a}: {why}" for a, why in puller.gave_up.items())
        who = "the server gave up" if len(clients) == 1 else "every server gave up"
        raise PolypsynthError(
            f"{who} with {len(missing)} of {target.count} images missing (first: {missing[0]}): {reasons}"
        )


@dataclass
class _Puller:
    """What the workers of one `_pull` share: the request as resolved, the folder (written under
    a lock), the queue of ranges, and which servers gave up and why. Every range is asked with the
    settings the folder records (the request's, else the model's defaults as GetModel reported
    them), so no server falls back on defaults of its own."""

    model: str
    params: Params
    target: ResumableFolder
    progress: Callable[[int], None] | None
    retries: int
    backoff: tuple[float, float]
    chunk: int
    work: _Work
    lock: threading.Lock = field(default_factory=threading.Lock)
    gave_up: dict[str, str] = field(default_factory=dict)

    def deliver(self, image) -> None:
        expected = self.target.provenance  # the folder's samples.jsonl records it for every image
        drawn = provenance_of(image)
        if drawn != expected:
            differ = ", ".join(
                f"{k} {getattr(drawn, k)!r} (expected {getattr(expected, k)!r})"
                for k in vars(expected)
                if getattr(drawn, k) != getattr(expected, k)
            )
            raise PolypsynthError(f"server answered image {image.index} with {differ}")
        with self.lock:
            written = self.target.write(image.index, image.seed, image.data)
        if written and self.progress:
            self.progress(1)

    def undelivered(self, start: int, stop: int) -> list[tuple[int, int]]:
        with self.lock:
            return _ranges([i for i in range(start, stop) if i not in self.target.done], self.chunk)

    def stream(self, address: str, client: SamplerClient, start: int, stop: int) -> bool:
        """One range from one server into the folder; False when the stream ended early (the
        fault is then recorded in the work queue and this worker stops)."""
        draw, settings = self.params.draw, self.params.settings
        asked = Request(
            Draw(draw.class_name, stop - start, draw.seed, start),
            Given(settings.steps, settings.guidance, settings.scheduler),
        )
        images = client.stream(self.model, asked)
        for image in images:
            self.deliver(image)
        left = self.undelivered(start, stop)
        self.work.finish(left)
        if left:  # ended without error and without every image: not a fault to retry
            n = sum(b - a for a, b in left)
            message = f"server {address} ended the stream with {n} of {stop - start} images missing (first: {left[0][0]})"
            self.work.fail(PolypsynthError(message))
        return not left

    def retry(self, address: str, exc: grpc.RpcError, failures: int) -> bool:
        """After a failed range: waits out the backoff and says whether to try again."""
        if exc.code() not in RETRYABLE:
            self.work.fail(PolypsynthError(f"server {address}: {exc.code().name}: {exc.details()}"))
            return False
        if failures > self.retries:
            self.gave_up[address] = f"{exc.code().name}: {exc.details()}"
            log.warning("%s: giving up after %d attempts in a row", address, failures)
            return False
        wait = backoff_wait(self.backoff, failures - 1)
        log.warning(
            "%s: %s; retry %d of %d in %.1f s", address, exc.code().name, failures, self.retries, wait
        )
        time.sleep(wait)
        return True

    def worker(self, address: str, client: SamplerClient) -> None:
        failures = 0
        while (span := self.work.take()) is not None:
            start, stop = span
            try:
                if not self.stream(address, client, start, stop):
                    return
                failures = 0
            except grpc.RpcError as exc:
                left = self.undelivered(start, stop)
                self.work.finish(left)
                # A range is one worker's alone and held only missing images: any gone from it
                # came through this stream, so the fault starts a new run of failures.
                if sum(b - a for a, b in left) < stop - start:
                    failures = 0
                failures += 1
                if not self.retry(address, exc, failures):
                    return
            except BaseException as exc:  # a local fault (disk full, bad image): stop everyone
                self.work.finish([])
                self.work.fail(exc)
                return

"""A dynamic batcher per model.

Images of concurrent requests that share steps, guidance and scheduler are merged into backend
batches of up to `max_batch` (classes may differ: contexts are per image), waiting at most
`max_wait_ms` to fill one. Batches are filled round-robin over the waiting requests, one image
each in turn and least-served first, so a 1-image request joins the next batch instead of
waiting behind a 10,000-image one. Per-image seeds make every image independent of how it was
packed.

Backpressure: a request's images are scheduled only while its stream has room. At most `window`
of its images are taken and not yet received: for a request with credit (GenerateWithCredit),
not yet acknowledged by its client (`ack`); otherwise not yet handed to its stream, which the
transport accepts as far as HTTP/2 flow control lets it. So a client that stops reading stops
costing compute and memory, and cannot starve the others.

Isolation: when a batch fails, each request's images are run again on their own; only the
requests whose own images fail get the error.

A cancelled request's queued images are dropped at once; the queue is bounded and refuses work
beyond it, and `ready` is False while it is full or the batcher is stopped.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.loop import sample_batch
from polypsynth.sampling.request import Params, Settings

log = logging.getLogger("polypsynth.serve")
_DONE = object()


class QueueFull(PolypsynthError):
    """The model's queue cannot take the request now."""


@dataclass(eq=False)
class Job:
    """One request (resolved and validated; position p of its images is seeded
    `params.draw.seed_of(p)`) and its scheduling state in the batcher; results arrive through `stream()`."""

    params: Params
    next_index: int = 0  # images taken into batches so far
    consumed: int = 0  # images handed to the stream so far
    window: int = 0  # most images taken and not yet received (set by the batcher)
    credit: bool = False  # received = acknowledged by the client (GenerateWithCredit)
    acked: int = 0  # images the client said it received (credit only)
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: queue.Queue = field(default_factory=queue.Queue)  # (index, seed, pixels) | Exception | _DONE
    order: int = 0
    finished: bool = False  # the terminal item is on `results`
    on_consumed: Callable[[], None] = lambda: None

    @property
    def count(self) -> int:
        return self.params.count

    @property
    def class_name(self) -> str:
        return self.params.class_name

    @property
    def key(self) -> Settings:
        """Requests drawn with the same settings share batches (classes may mix)."""
        return self.params.settings

    @property
    def pending(self) -> int:
        return self.count - self.next_index

    @property
    def received(self) -> int:
        return self.acked if self.credit else self.consumed

    @property
    def outstanding(self) -> int:
        return self.next_index - self.received

    @property
    def room(self) -> int:
        return min(self.pending, self.window - self.outstanding)

    def cancel(self) -> None:
        self.cancelled.set()

    def stream(self, timeout: float | None = None):
        """Yield (index, seed, pixels) in completion order until the job is done."""
        while True:
            item = self.results.get(timeout=timeout)
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            self.consumed += 1
            self.on_consumed()
            yield item


# (the request that failed, or None; its images; the images computed, or the exception)
Outcome = tuple[Job | None, list[tuple[Job, int]], Any]


@dataclass(frozen=True)
class BatcherStats:
    queued: int  # accepted, not yet in a batch
    in_flight: int  # in the batch being computed
    buffered: int  # computed, not yet received (credit) or not yet handed to their streams
    jobs: int  # requests not finished
    peak_outstanding: int  # the most images any one request had taken and not consumed


class Batcher:
    def __init__(
        self,
        model,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        max_queued_images: int = 100_000,
        window: int | None = None,
        run: Callable = sample_batch,
        on_batch: Callable[[int, float], None] | None = None,
        on_ready: Callable[[bool], None] | None = None,
    ):
        if window is not None and window < 1:
            raise ValueError(f"window: must be at least 1 image, got {window}")
        self.model = model
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_queued = max_queued_images
        self.window = window or 2 * max_batch
        self._run, self._on_batch, self._on_ready = run, on_batch, on_ready
        self._jobs: list[Job] = []  # round-robin order; jobs leave when finished
        self._cond = threading.Condition()
        self._queued = 0
        self._in_flight = 0
        self._peak = 0
        self._stop = False
        self._ready = True
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    # --- state --------------------------------------------------------------------------------

    @property
    def queued_images(self) -> int:
        with self._cond:
            return self._queued

    @property
    def ready(self) -> bool:
        """Whether the model can take work: running, and the queue below its bound."""
        with self._cond:
            return self._is_ready()

    def _is_ready(self) -> bool:
        return not self._stop and self._thread.is_alive() and self._queued < self.max_queued

    def _update_ready(self) -> None:
        ready = self._is_ready()
        if ready != self._ready:
            self._ready = ready
            if self._on_ready:
                self._on_ready(ready)

    def stats(self) -> BatcherStats:
        with self._cond:
            taken = sum(j.outstanding for j in self._jobs)  # live requests only
            buffered = max(0, taken - self._in_flight)  # the batch may hold a cancelled request's
            return BatcherStats(self._queued, self._in_flight, buffered, len(self._jobs), self._peak)

    # --- requests -----------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stop:
                raise QueueFull("the server is shutting down")
            if self._queued + job.count > self.max_queued:
                raise QueueFull(
                    f"queue full: {self._queued} images queued, the request adds {job.count}, the limit is {self.max_queued}"
                )
            job.order = next(self._counter)
            job.window = self.window
            job.on_consumed = self._notify
            self._jobs.append(job)
            self._queued += job.count
            self._update_ready()
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel()
        with self._cond:
            self._drop_cancelled()
            self._cond.notify_all()

    def ack(self, job: Job, received: int) -> None:
        """The client of a credit request has received `received` images: it may have that many
        more in flight (never more than were handed to its stream)."""
        with self._cond:
            job.acked = max(job.acked, min(received, job.consumed))
            self._cond.notify_all()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _finish(self, job: Job, item=_DONE) -> None:
        """Put the job's terminal item once and forget the job (lock held)."""
        if not job.finished:
            job.finished = True
            job.results.put(item)
        self._queued -= job.pending
        job.next_index = job.count
        if job in self._jobs:
            self._jobs.remove(job)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs if j.cancelled.is_set()]:
            self._finish(job)
        self._update_ready()

    # --- the batching thread ------------------------------------------------------------------

    def _schedulable(self) -> list[Job]:
        return [j for j in self._jobs if j.room > 0]

    def _take_batch(self) -> list[tuple[Job, int]] | None:
        """Wait for work that has room, then take up to max_batch images round-robin (lock held)."""
        while True:
            self._drop_cancelled()
            if self._stop:
                return None
            if self._schedulable():
                break
            self._cond.wait()
        deadline = time.monotonic() + self.max_wait
        while True:
            self._drop_cancelled()
            ready = self._schedulable()
            if self._stop or not ready:
                return []
            key = ready[0].key
            waiting = sum(j.room for j in ready if j.key == key)
            remaining = deadline - time.monotonic()
            if waiting >= self.max_batch or remaining <= 0:
                break
            self._cond.wait(remaining)
        batch: list[tuple[Job, int]] = []
        # Least-served first (then arrival): a new request joins the very next batch instead of
        # waiting for a round over every older request; among equals this is plain round-robin.
        same = sorted((j for j in ready if j.key == key), key=lambda j: (j.next_index, j.order))
        while len(batch) < self.max_batch and any(j.room > 0 for j in same):
            for job in same:
                if job.room > 0 and len(batch) < self.max_batch:
                    batch.append((job, job.next_index))
                    job.next_index += 1
        self._queued -= len(batch)
        self._in_flight = len(batch)
        self._peak = max(self._peak, *(j.outstanding for j in same))
        # Requests that got images move to the back: the next batch starts with the others.
        served = {id(j) for j, _ in batch}
        self._jobs = [j for j in self._jobs if id(j) not in served] + [
            j for j in self._jobs if id(j) in served
        ]
        self._update_ready()
        return batch

    def _compute(self, batch: list[tuple[Job, int]]) -> list[Outcome]:
        """Run a batch; on failure run each request's images alone, so one request's failure
        (a poisoned seed, a backend error on its images) is that request's only."""
        job0 = batch[0][0]

        def run(items):
            seeds = [job.params.draw.seed_of(index) for job, index in items]
            return self._run(self.model, seeds, [job.class_name for job, _ in items], job0.key)

        try:
            return [(None, batch, run(batch))]
        except Exception as exc:
            jobs = {id(j): j for j, _ in batch}
            if len(jobs) == 1:
                log.exception("batch of one request failed")
                return [(job0, batch, exc)]
            log.warning("batch of %d requests failed (%s); running each request alone", len(jobs), exc)
        outcomes: list[Outcome] = []
        for job in jobs.values():
            items = [(j, i) for j, i in batch if j is job]
            try:
                outcomes.append((None, items, run(items)))
            except Exception as exc:
                log.exception("request failed on its own images")
                outcomes.append((job, items, exc))
        return outcomes

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            start = time.perf_counter()
            outcomes = self._compute(batch)
            seconds = time.perf_counter() - start
            computed = sum(len(items) for failed, items, _ in outcomes if failed is None)
            if computed and self._on_batch:
                self._on_batch(computed, seconds)
            with self._cond:
                self._in_flight = 0
                for failed, items, result in outcomes:
                    if failed is not None:
                        failed.cancel()
                        self._finish(failed, result)
                        continue
                    for (job, index), pixels in zip(items, result, strict=True):
                        if not job.finished:
                            job.results.put((index, job.params.draw.seed_of(index), pixels))
                # One worker runs batches in order: a job whose last image was taken is complete.
                for job in {id(j): j for j, _ in batch}.values():
                    if job.pending == 0 and not job.finished:
                        self._finish(job)
                self._update_ready()
                self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, end every unfinished request with an error, and join the thread: by
        default until the running batch has ended (the process must not exit while a backend runs
        it: ONNX Runtime's threads abort the process then)."""
        with self._cond:
            self._stop = True
            for job in list(self._jobs):
                self._finish(job, QueueFull("the server is shutting down"))
            self._update_ready()
            self._cond.notify_all()
        self._thread.join(1.0 if timeout is None else min(timeout, 1.0))
        if self._thread.is_alive():
            log.info("waiting for the running batch to end")
            self._thread.join(None if timeout is None else max(0.0, timeout - 1.0))
        if self._thread.is_alive():
            log.warning("the batcher did not stop within %.1f s (a batch is still running)", timeout)

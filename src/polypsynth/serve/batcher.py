"""A dynamic batcher per model.

Images of concurrent requests that share steps, guidance and scheduler are merged into backend
batches of up to `max_batch` (classes may differ: contexts are per image), waiting at most
`max_wait_ms` to fill one. Batches are filled round-robin over the waiting requests, one image
each in turn and least-served first, so a 1-image request joins the next batch instead of
waiting behind a 10,000-image one. Per-image seeds make
every image independent of how it was packed. A cancelled request's queued images are dropped at
once and their capacity freed; the queue is bounded and refuses work beyond it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from polypsynth.errors import PolypsynthError
from polypsynth.sampling.loop import sample_batch

log = logging.getLogger("polypsynth.serve")
_DONE = object()


class QueueFull(PolypsynthError):
    """The model's queue cannot take the request now."""


@dataclass(eq=False)
class Job:
    """One request's images, consumed by the batcher; results arrive on `results`."""

    class_name: str
    count: int
    seed: int
    steps: int
    guidance: float
    scheduler: str
    next_index: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: queue.Queue = field(default_factory=queue.Queue)  # (index, seed, pixels) | Exception | _DONE
    order: int = 0

    @property
    def key(self) -> tuple:
        return (self.steps, float(self.guidance), self.scheduler)

    @property
    def pending(self) -> int:
        return self.count - self.next_index

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
            yield item


class Batcher:
    def __init__(
        self, model, max_batch: int = 32, max_wait_ms: float = 10.0, max_queued_images: int = 100_000
    ):
        self.model = model
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_queued = max_queued_images
        self._jobs: deque[Job] = deque()  # round-robin order
        self._cond = threading.Condition()
        self._queued = 0
        self._stop = False
        self._counter = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    @property
    def queued_images(self) -> int:
        with self._cond:
            return self._queued

    def submit(self, job: Job) -> Job:
        with self._cond:
            if self._stop:
                raise QueueFull("the server is shutting down")
            if self._queued + job.count > self.max_queued:
                raise QueueFull(
                    f"queue full: {self._queued} images queued, the request adds {job.count}, the limit is {self.max_queued}"
                )
            job.order = next(self._counter)
            self._jobs.append(job)
            self._queued += job.count
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel()
        with self._cond:
            self._drop_cancelled()
            self._cond.notify_all()

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._jobs if j.cancelled.is_set()]:
            self._jobs.remove(job)
            self._queued -= job.pending
            job.next_index = job.count
            job.results.put(_DONE)

    def _take_batch(self) -> list[tuple[Job, int]] | None:
        """Wait for work, then take up to max_batch images round-robin (lock held by caller)."""
        while not self._stop:
            self._drop_cancelled()
            if self._jobs:
                break
            self._cond.wait()
        if self._stop and not self._jobs:
            return None
        deadline = time.monotonic() + self.max_wait
        while True:
            self._drop_cancelled()
            if not self._jobs:
                return []
            key = self._jobs[0].key
            waiting = sum(j.pending for j in self._jobs if j.key == key)
            remaining = deadline - time.monotonic()
            if waiting >= self.max_batch or remaining <= 0 or self._stop:
                break
            self._cond.wait(remaining)
        batch: list[tuple[Job, int]] = []
        # Least-served first (then arrival): a new request joins the very next batch instead of
        # waiting for a round over every older request; among equals this is plain round-robin.
        same = sorted((j for j in self._jobs if j.key == key), key=lambda j: (j.next_index, j.order))
        while len(batch) < self.max_batch and any(j.pending for j in same):
            for job in same:
                if job.pending and len(batch) < self.max_batch:
                    batch.append((job, job.next_index))
                    job.next_index += 1
        self._queued -= len(batch)
        # Requests that got images move to the back: the next batch starts with the others.
        served = {id(j) for j, _ in batch}
        rest = [j for j in self._jobs if id(j) not in served and j.pending]
        again = [j for j in self._jobs if id(j) in served and j.pending]
        self._jobs = deque(rest + again)
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            job0 = batch[0][0]
            seeds = [job.seed + index for job, index in batch]
            try:
                images = sample_batch(
                    self.model,
                    seeds,
                    [job.class_name for job, _ in batch],
                    job0.steps,
                    job0.guidance,
                    job0.scheduler,
                )
            except Exception as exc:  # the request fails, the server goes on
                log.exception("batch failed")
                for job in {id(j): j for j, _ in batch}.values():
                    job.results.put(exc)
                    self.cancel(job)
                continue
            for (job, index), pixels, seed in zip(batch, images, seeds, strict=True):
                if not job.cancelled.is_set():
                    job.results.put((index, seed, pixels))
            # One worker runs batches in order: a job whose last image was taken is now complete.
            for job in {id(j): j for j, _ in batch}.values():
                if job.next_index == job.count and not job.cancelled.is_set():
                    job.results.put(_DONE)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

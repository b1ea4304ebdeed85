"""The batcher on its own, with a fake sampler: backpressure, failure isolation, readiness and
shutdown, driven by events instead of wall-clock sleeps."""

import threading

import numpy as np
import pytest

from polypsynth.sampling.request import make_params
from polypsynth.serve.batcher import Batcher, Job, QueueFull

WAIT = 30  # seconds; only reached when something is broken


class FakeSampler:
    """Returns 2x2 images whose pixels are seed % 251; records the seeds of every call; can be
    held (each call waits on `gate`) and poisoned (a call holding a poisoned seed raises)."""

    def __init__(self, poison=()):
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.poison = set(poison)

    def __call__(self, model, seeds, classes, settings):
        self.calls.append(list(seeds))
        self.entered.release()
        assert self.gate.wait(WAIT)
        bad = self.poison.intersection(seeds)
        if bad:
            raise ValueError(f"seed {min(bad)} is poisoned")
        return np.stack([np.full((2, 2, 3), s % 251, np.uint8) for s in seeds])

    @property
    def computed(self) -> int:
        return sum(len(c) for c in self.calls)


def job(count, seed=0, cls="AD", steps=2):
    return Job(make_params(cls, count, seed=seed, steps=steps, guidance=3.0, scheduler="dpm++"))


def drain(j):
    return [(index, seed, int(pixels[0, 0, 0])) for index, seed, pixels in j.stream(timeout=WAIT)]


@pytest.fixture
def make():
    made = []

    def factory(sampler, **kw):
        b = Batcher(None, **{"max_batch": 4, "max_wait_ms": 1, **kw}, run=sampler)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()
        assert not b._thread.is_alive()


def test_a_stream_that_is_not_read_stops_costing_compute(make, wait_until):
    sampler = FakeSampler()
    b = make(sampler, window=8)
    stalled = b.submit(job(1000, seed=0))
    wait_until(lambda: b.stats().buffered == 8, "the window to fill")
    # Nothing more is computed for the stalled request while it is not read...
    other = b.submit(job(10, seed=5000, cls="NON_AD"))
    got = drain(other)  # ...and it does not hold back another request
    assert sorted(i for i, _, _ in got) == list(range(10))
    stats = b.stats()
    assert stats.buffered == 8 and stats.queued == 1000 - 8 and stats.peak_outstanding == 8
    assert sampler.computed == 8 + 10
    # Reading it lets work resume, never more than the window ahead of the reader.
    stream = stalled.stream(timeout=WAIT)
    for _ in range(40):
        next(stream)
        assert stalled.outstanding <= 8
    assert b.stats().peak_outstanding == 8
    b.cancel(stalled)
    wait_until(lambda: b.stats().jobs == 0, "the cancelled request to be dropped")
    assert b.stats().queued == 0


def test_a_failing_request_fails_alone(make):
    sampler = FakeSampler(poison={7_000_002})
    b = make(sampler, max_wait_ms=200)
    sampler.gate.clear()
    first = b.submit(job(1, seed=1))  # occupies the worker while the others queue up
    assert sampler.entered.acquire(timeout=WAIT)
    good, bad = b.submit(job(2, seed=100)), b.submit(job(2, seed=7_000_001))
    sampler.gate.set()
    assert drain(first) == [(0, 1, 1)]
    assert drain(good) == [(0, 100, 100), (1, 101, 101)]
    with pytest.raises(ValueError, match="seed 7000002 is poisoned"):
        drain(bad)
    # The shared batch failed, then each request's images ran on their own.
    assert sampler.calls[1:] == [[100, 7_000_001, 101, 7_000_002], [100, 101], [7_000_001, 7_000_002]]
    s = b.stats()
    assert b.ready and (s.queued, s.in_flight, s.buffered, s.jobs) == (0, 0, 0, 0)


def test_readiness_follows_the_queue_bound(make):
    sampler = FakeSampler()
    changes = []
    b = make(sampler, max_queued_images=10, on_ready=changes.append)
    sampler.gate.clear()
    running = b.submit(job(4, seed=0))
    assert sampler.entered.acquire(timeout=WAIT)
    assert b.ready
    full = b.submit(job(10, seed=100))
    assert not b.ready and changes == [False]
    with pytest.raises(QueueFull, match="queue full: 10 images queued, the request adds 1, the limit is 10"):
        b.submit(job(1))
    sampler.gate.set()
    drain(running)
    drain(full)
    assert b.ready and changes == [False, True]
    b.close()
    assert not b.ready and changes == [False, True, False]


def test_cancelling_a_request_whose_last_batch_is_running_ends_its_stream(make, wait_until):
    sampler = FakeSampler()
    b = make(sampler)
    sampler.gate.clear()
    j = b.submit(job(3))
    assert sampler.entered.acquire(timeout=WAIT)  # all 3 images taken, none delivered
    b.cancel(j)
    assert drain(j) == []
    sampler.gate.set()
    wait_until(lambda: b.stats().in_flight == 0, "the batch to end")
    assert b.stats().jobs == 0 and j.results.empty()


def test_close_ends_unfinished_requests_with_an_error(make, wait_until):
    sampler = FakeSampler()
    b = make(sampler, window=4)
    j = b.submit(job(100))
    wait_until(lambda: b.stats().buffered == 4, "the window to fill")
    b.close()
    assert not b._thread.is_alive()
    stream = j.stream(timeout=WAIT)
    assert [next(stream)[0] for _ in range(4)] == [0, 1, 2, 3]  # what was computed is delivered
    with pytest.raises(QueueFull, match="the server is shutting down"):
        next(stream)
    with pytest.raises(QueueFull, match="the server is shutting down"):
        b.submit(job(1))


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window: must be at least 1 image, got 0"):
        Batcher(None, window=0)

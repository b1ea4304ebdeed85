import threading

import pytest

WAIT = 60  # seconds; reached only when something is broken


def _wait_until(predicate, what: str, timeout: float = WAIT) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout` seconds."""
    event = threading.Event()
    for _ in range(int(timeout * 100)):
        if predicate():
            return
        event.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def wait_until():
    return _wait_until

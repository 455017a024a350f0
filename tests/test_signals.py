"""A SIGTERM that arrives while the main thread holds the stop event's lock still stops the process.

The storer and the worker wait on a ``threading.Event`` in their main thread; a handler calling ``Event.set()``
there deadlocks when the signal lands inside ``Event.wait()`` (a storer hung so for ten minutes in a test run).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from hostatlas.signals import set_on_signals


@pytest.mark.timeout(20)
def test_a_signal_while_the_event_lock_is_held_sets_the_event_once_it_is_released() -> None:
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    set_on_signals(stop, signal.SIGTERM)
    try:
        # Where Event.wait() is when the signal lands: inside its condition's lock (a private attribute, used here
        # to hold the lock on purpose). A handler that called stop.set() directly would never return from here.
        with stop._cond:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGTERM)
            assert not stop.is_set()
        assert stop.wait(timeout=5)
    finally:
        signal.signal(signal.SIGTERM, previous)

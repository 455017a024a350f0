"""Stopping a process on SIGTERM/SIGINT by setting a ``threading.Event``, safely.

A signal handler runs in the main thread between two bytecodes, possibly while that thread is inside
``Event.wait()`` holding the event's (non-reentrant) condition lock; calling ``Event.set()`` right there waits
for that lock forever. A storer process was seen hung that way after a SIGTERM. So the handler only starts a
thread that sets the event, which takes the lock once the main thread lets go of it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


def set_on_signals(event: threading.Event, *signums: signal.Signals) -> None:
    def handle(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=event.set, name="signal-stop", daemon=True).start()

    for signum in signums or (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handle)

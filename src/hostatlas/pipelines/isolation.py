"""One bad item never stops the line: a batch that fails is written again in halves, down to single items.

An item that fails alone is poison: the caller sets it aside (``quarantine.set_aside``) and the line moves
on. A failure that is the database's rather than the items' stops the pass with nothing set aside, and
the caller keeps what was not written for its next pass. It is recognised two ways: by its kind
(``is_outage``: the connection is refused or lost, the pool is exhausted, SQLite is locked, a deadlock),
or because every item of the pass failed alone: when everything fails, the fault is not in the items.

Splitting depth first finds a poison item in about ``2 * log2(batch)`` transactions. After
``max_poison`` items have failed alone in one pass, the remaining pieces are still tried whole but no
longer split, so a pass costs a bounded number of transactions whatever arrives; the rest of the poison
is found on the next passes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from hostatlas.coalesce import LatestValues

T = TypeVar("T")
V = TypeVar("V")

MAX_POISON_PER_PASS = 32

# The database's trouble, not the statement's: PostgreSQL's connection, resource, shutdown and
# serialisation errors are all OperationalError, and so are SQLite's "database is locked" and
# "unable to open database file".
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, _OUTAGES) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


@dataclass
class Pass(Generic[T]):
    written: list[T] = field(default_factory=list)
    # Items that failed alone, with why: to be set aside.
    poison: list[tuple[T, Exception]] = field(default_factory=list)
    # Not written, and not poison: to be tried again on the next pass.
    unwritten: list[T] = field(default_factory=list)
    # Set when the pass failed as a whole (the database is down): nothing is poison then.
    outage: Exception | None = None


def write_isolating(items: Sequence[T], write: Callable[[list[T]], None], *, batch: int,
                    max_poison: int = MAX_POISON_PER_PASS) -> Pass[T]:
    """Call ``write`` (one transaction) on batches of ``items``, halving a batch that fails."""
    done: Pass[T] = Pass()
    pieces = deque(list(items[start:start + batch]) for start in range(0, len(items), batch))
    while pieces:
        piece = pieces.popleft()
        if done.outage is not None:
            done.unwritten += piece
            continue
        try:
            write(piece)
        except Exception as exc:
            if is_outage(exc):
                done.outage = exc
                done.unwritten += piece
            elif len(done.poison) >= max_poison:
                done.unwritten += piece
            elif len(piece) == 1:
                done.poison.append((piece[0], exc))
            else:
                half = len(piece) // 2
                pieces.extendleft((piece[half:], piece[:half]))
        else:
            done.written += piece
    if done.outage is None and not done.written and len(done.poison) > 1:
        done.outage = done.poison[0][1]
    if done.outage is not None:
        done.unwritten += [item for item, _ in done.poison]
        done.poison = []
    return done


def flush_latest(values: LatestValues[int, V], write: Callable[[list[tuple[int, V]]], None],
                 set_aside: Callable[[list[tuple[tuple[int, V], Exception]]], None], *, batch: int) -> int:
    """Drain a buffer and write it in id order (the order rows are locked in), setting poison aside.

    Returns how many entries were written. What was not written goes back into the buffer, never over a
    newer value; when the database is down that is everything not yet written, and the outage is raised.
    """
    pending = values.drain()
    done = write_isolating(sorted(pending.items(), key=lambda entry: entry[0]), write, batch=batch)
    values.restore(dict(done.unwritten))
    if done.poison:
        try:
            set_aside(done.poison)
        except Exception:
            values.restore(dict(entry for entry, _ in done.poison))
            raise
    if done.outage is not None:
        raise done.outage
    return len(done.written)

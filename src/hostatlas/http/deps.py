"""Dependencies every handler uses: the request's database session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from hostatlas.http import runtime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    with runtime.current(request).db.session(write=request.method not in SAFE_METHODS) as session:
        yield session


def write_session(request: Request) -> Iterator[Session]:
    """A write transaction whatever the method: for the rare read that writes (a GET that creates on first use)."""
    with runtime.current(request).db.session(write=True) as session:
        yield session


# Every handler and dependency names the session this way, so they share one per request; "function"
# scope commits before the response is sent, so a client never reads before its own write landed.
DbSession = Annotated[Session, Depends(db_session, scope="function")]
WriteSession = Annotated[Session, Depends(write_session, scope="function")]

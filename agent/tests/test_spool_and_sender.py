"""The spool and the sender against a real HTTP server: order, retries, Retry-After, poison batches, bounds."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from platform_stub import PlatformStub

from hostatlas_agent.outbox import Sender, Status
from hostatlas_agent.spool import Spool
from hostatlas_agent.transport import Outcome, Platform, base_url, encode


@pytest.fixture
def stub() -> Iterator[PlatformStub]:
    server = PlatformStub()
    yield server
    server.close()


def _spool(tmp_path: Path, **bounds: Any) -> Spool:
    return Spool(tmp_path / "spool", max_bytes=bounds.get("max_bytes", 1 << 20), max_age=bounds.get("max_age", 3600),
                 clock=bounds.get("clock", time.time))


def _drain(sender: Sender, rounds: int = 50) -> list[Any]:
    delays = []
    for _ in range(rounds):
        delay = sender.send_one()
        if delay is not None:
            delays.append(delay)
            if sender.spool.oldest() is None:
                break
    return delays


def test_batches_survive_a_new_spool_and_leave_in_order(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    for n in range(5):
        spool.append("metrics", encode({"n": n}))
    reopened = _spool(tmp_path)  # as after a restart
    assert reopened.stats()["batches"] == 5
    sender = Sender(Platform(stub.url, "agt_x"), reopened, Status())
    _drain(sender)
    assert [b["n"] for b in stub.bodies("metrics")] == [0, 1, 2, 3, 4]
    assert reopened.stats()["batches"] == 0


def test_an_unavailable_platform_keeps_the_batch_and_honours_retry_after(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    spool.append("logs", encode({"entries": [1]}))
    spool.append("logs", encode({"entries": [2]}))
    stub.script = lambda path, body: (429, {"Retry-After": "7"}, {"error": {"code": "rate_limited"}})
    sender = Sender(Platform(stub.url, "agt_x"), spool, Status())
    delay = sender.send_one()
    assert delay is not None and delay >= 7
    assert spool.stats()["batches"] == 2
    stub.script = lambda path, body: (503, {}, {"error": {"code": "unavailable"}})
    assert (sender.send_one() or 0) > 0
    stub.script = None
    _drain(sender)
    assert [n for b in stub.bodies("logs") for n in b["entries"]] == [1, 2]


def test_no_answer_at_all_is_retried_not_dropped(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append("metrics", encode({"n": 1}))
    sender = Sender(Platform("http://127.0.0.1:9", "agt_x", timeout=1), spool, Status())
    assert (sender.send_one() or 0) > 0
    assert spool.stats()["batches"] == 1
    assert sender.status.snapshot()["last_error"]["outcome"] == "retry"


def test_a_refused_batch_is_set_aside_with_its_reason_and_the_line_goes_on(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    for n in range(3):
        spool.append("logs", encode({"n": n}))

    def refuse_the_middle_one(path: str, body: Any) -> Any:
        if body == {"n": 1}:
            return 422, {}, {"error": {"code": "validation_failed", "message": "bad", "fields": [
                {"field": "entries", "message": "nope"}]}}
        return 200, {}, {"accepted": 1}

    stub.script = refuse_the_middle_one
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    assert [b["n"] for b in stub.bodies("logs")] == [0, 2]
    [(name, reason)] = spool.rejected()
    assert "422" in reason and "validation_failed" in reason
    stub.script = None
    assert spool.replay_rejected() == 1
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    assert [b["n"] for b in stub.bodies("logs")] == [0, 2, 1]
    assert spool.rejected() == []


def test_a_corrupt_spool_file_is_set_aside_and_the_next_batch_goes(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    spool.append("metrics", encode({"n": 0}))
    spool.append("metrics", encode({"n": 1}))
    first = spool.oldest()
    assert first is not None
    first.path.write_bytes(b"not zstd at all")  # a torn write, a bad disk: the platform answers 400
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    assert [b["n"] for b in stub.bodies("metrics")] == [1]
    [(name, reason)] = spool.rejected()
    assert name == first.path.name and "400" in reason and "malformed_body" in reason


def test_a_vanished_spool_file_is_not_fatal(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    spool.append("metrics", encode({"n": 0}))
    spool.append("metrics", encode({"n": 1}))
    first = spool.oldest()
    assert first is not None
    first.path.unlink()
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    assert [b["n"] for b in stub.bodies("metrics")] == [1]


def test_unauthorized_pauses_without_dropping(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    spool.append("metrics", encode({"n": 1}))
    stub.script = lambda path, body: (401, {}, {"error": {"code": "agent_token_revoked", "message": "revoked"}})
    told: list[bool] = []
    sender = Sender(Platform(stub.url, "agt_x"), spool, Status(), on_unauthorized=lambda: told.append(True))
    assert sender.send_one() == 60.0
    assert told == [True] and spool.stats()["batches"] == 1


def test_size_and_age_bounds_push_out_the_oldest_and_count_them(tmp_path: Path) -> None:
    now = [1000.0]
    spool = _spool(tmp_path, max_bytes=10_000, max_age=100, clock=lambda: now[0])
    noise = os.urandom(2000)  # incompressible
    for n in range(10):
        spool.append("logs", encode({"n": n, "pad": noise.hex()}))
    assert spool.stats()["bytes"] <= 10_000
    assert spool.dropped > 0
    kept = spool.stats()["batches"]
    now[0] += 101
    assert spool.oldest() is None
    assert spool.dropped == 10 and kept < 10


def test_compressed_bodies_are_what_the_platform_gets(tmp_path: Path, stub: PlatformStub) -> None:
    big = {"entries": [{"ts": 1.0, "source": "/x", "line": "y" * 100} for _ in range(50)]}
    answer = Platform(stub.url, "agt_x").post("logs", encode(big))
    assert answer.outcome is Outcome.DELIVERED
    assert stub.bodies("logs") == [big]
    raw = zstandard.ZstdCompressor().compress(json.dumps(big).encode())
    assert len(raw) < len(encode(big))


def test_base_url_accepts_what_people_type() -> None:
    assert base_url("https://h.example.com/") == "https://h.example.com"
    assert base_url("https://h.example.com/api/v1") == "https://h.example.com"
    assert base_url(" http://127.0.0.1:8000/api/v1/agent ") == "http://127.0.0.1:8000"


def test_a_backlog_leaves_in_few_merged_requests_in_order(tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    for n in range(100):
        spool.append("logs", encode({"entries": [{"ts": n, "source": "/x", "line": f"line {n}"}]}))
    spool.append("metrics", encode({"series": [{"metric": "cpu.percent", "labels": {}, "points": [[1, 2.0]]}]}))
    spool.append("logs", encode({"entries": [{"ts": 100, "source": "/x", "line": "line 100"}]}))
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    requests = [path.rsplit("/", 1)[-1] for path, _ in stub.received]
    assert requests == ["logs", "logs", "metrics", "logs"]  # 64 batches at most per request, never across kinds
    lines = [e["line"] for b in stub.bodies("logs") for e in b["entries"]]
    assert lines == [f"line {n}" for n in range(101)]
    assert spool.stats()["batches"] == 0


def test_a_refused_merged_request_is_retried_one_by_one_to_set_aside_only_the_bad_batch(
        tmp_path: Path, stub: PlatformStub) -> None:
    spool = _spool(tmp_path)
    for n in range(5):
        spool.append("logs", encode({"entries": [{"ts": n, "source": "/x", "line": "BAD" if n == 2 else str(n)}]}))

    def refuse_bad(path: str, body: Any) -> Any:
        if any(e["line"] == "BAD" for e in body["entries"]):
            return 422, {}, {"error": {"code": "validation_failed", "message": "bad entry"}}
        return 200, {}, {"accepted": len(body["entries"])}

    stub.script = refuse_bad
    _drain(Sender(Platform(stub.url, "agt_x"), spool, Status()))
    assert [e["line"] for b in stub.bodies("logs") for e in b["entries"]] == ["0", "1", "3", "4"]
    [(name, reason)] = spool.rejected()
    assert "422" in reason

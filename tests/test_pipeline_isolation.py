"""The rules every pipeline's batch writes follow (``pipelines.isolation``): poison is found in a few
writes, and a failure of everything is an outage, never poison."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from hostatlas.pipelines.isolation import write_isolating


class Writer:
    """Fails any piece that holds one of ``poison`` (or every piece, with ``fail``), counting the calls."""

    def __init__(self, poison: set[int], fail: Callable[[], Exception] | None = None) -> None:
        self.poison = poison
        self.fail = fail
        self.calls = 0

    def __call__(self, piece: list[int]) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail()
        if self.poison & set(piece):
            raise ValueError(f"refused {sorted(self.poison & set(piece))}")


def test_one_poison_item_in_a_thousand_is_found_in_a_few_writes() -> None:
    write = Writer({517})
    done = write_isolating(list(range(1000)), write, batch=1000)
    assert [item for item, _ in done.poison] == [517] and isinstance(done.poison[0][1], ValueError)
    assert sorted(done.written) == [n for n in range(1000) if n != 517]
    assert done.unwritten == [] and done.outage is None
    assert write.calls <= 2 * 10 + 1


def test_a_lone_item_that_fails_is_poison() -> None:
    done = write_isolating([7], Writer({7}), batch=10)
    assert [item for item, _ in done.poison] == [7] and done.outage is None


def test_every_item_failing_alone_is_an_outage_and_nothing_is_poison() -> None:
    write = Writer(set(), fail=lambda: ValueError("the schema is broken"))
    done = write_isolating(list(range(500)), write, batch=100, max_poison=4)
    assert done.poison == [] and done.written == []
    assert sorted(done.unwritten) == list(range(500)) and isinstance(done.outage, ValueError)
    assert write.calls < 30  # bounded by the poison cap, not by the number of items


def test_a_connection_error_stops_the_pass_at_once() -> None:
    write = Writer(set(), fail=lambda: OperationalError("SELECT 1", {}, ConnectionRefusedError()))
    done = write_isolating(list(range(500)), write, batch=100)
    assert write.calls == 1 and done.poison == [] and sorted(done.unwritten) == list(range(500))
    assert isinstance(done.outage, OperationalError)


def test_past_the_poison_cap_the_rest_is_tried_whole_and_kept_for_the_next_pass() -> None:
    clustered = set(range(10))
    done = write_isolating(list(range(1000)), Writer(clustered), batch=1000, max_poison=4)
    assert [item for item, _ in done.poison] == [0, 1, 2, 3] and done.outage is None
    assert set(done.unwritten) >= clustered - {0, 1, 2, 3}
    assert set(range(500, 1000)) <= set(done.written)  # a clean half still went through
    assert sorted(done.written + done.unwritten + [0, 1, 2, 3]) == list(range(1000))

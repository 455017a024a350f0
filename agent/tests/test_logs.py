"""The log tailer on real files: rotations, truncations, restarts, bounds and odd bytes."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from hostatlas_agent.logs import LINE_MAX_BYTES, LogBatch, LogTailer, tail

T0 = 1_700_000_000.0


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def _tailer(tmp_path: Path, *patterns: Path | str, **options: int) -> LogTailer:
    tailer = LogTailer(tmp_path / "offsets.json", **options)
    tailer.set_paths([str(pattern) for pattern in patterns])
    return tailer


def _lines(batch: LogBatch | None) -> list[str]:
    return [str(entry["line"]) for entry in batch.entries] if batch else []


def _read(tailer: LogTailer, now: float = T0) -> list[str]:
    """Everything the tailer has to give now, each batch committed as the runner would."""
    lines: list[str] = []
    while (batch := tailer.poll(now)) is not None:
        lines += _lines(batch)
        batch.commit()
    return lines


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "app.log"
    path.write_text("history 1\nhistory 2\n")
    return path


def test_a_file_present_at_start_is_followed_from_its_end(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    assert tailer.poll(T0) is None
    _append(log, "one\ntwo\n")
    batch = tailer.poll(T0 + 2)
    assert batch is not None
    assert batch.entries == [{"ts": T0 + 2, "source": str(log), "line": "one"},
                             {"ts": T0 + 2, "source": str(log), "line": "two"}]
    assert tailer.poll(T0 + 4) is None


def test_a_partial_line_waits_for_its_newline(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "par")
    assert tailer.poll(T0 + 2) is None
    _append(log, "tial\r\nnext")
    assert _read(tailer, T0 + 4) == ["partial"]


def test_a_partial_line_is_sent_after_waiting_five_seconds(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "no newline yet")
    assert tailer.poll(T0 + 1) is None
    assert tailer.poll(T0 + 5) is None
    assert _read(tailer, T0 + 6.5) == ["no newline yet"]
    _append(log, " and the rest\n")
    assert _read(tailer, T0 + 7) == [" and the rest"]


def test_rename_rotation_delivers_the_old_files_last_lines_then_the_new_file(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "1\n2\n")
    assert _read(tailer, T0 + 2) == ["1", "2"]
    _append(log, "3\n4\n")  # written after our last poll, before the rotation
    os.rename(log, f"{log}.1")
    log.write_text("5\n6\n")
    assert _read(tailer, T0 + 4) == ["3", "4", "5", "6"]
    assert _read(tailer, T0 + 6) == []


def test_a_writer_still_appending_to_the_renamed_file_is_followed_until_it_reopens(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    os.rename(log, f"{log}.1")
    log.write_text("")
    assert _read(tailer, T0 + 2) == []
    _append(Path(f"{log}.1"), "late 1\n")  # the daemon has not been told to reopen yet
    assert _read(tailer, T0 + 4) == ["late 1"]
    _append(Path(f"{log}.1"), "late 2\n")
    _append(log, "reopened\n")
    assert _read(tailer, T0 + 6) == ["late 2", "reopened"]
    _append(Path(f"{log}.1"), "too late\n")  # the old file is closed once the new one is in use
    _append(log, "new 2\n")
    assert _read(tailer, T0 + 8) == ["new 2"]


def test_copytruncate_delivers_the_lines_written_between_our_read_and_the_truncation(
        tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "1\n2\n")
    assert _read(tailer, T0 + 2) == ["1", "2"]
    _append(log, "3\n4\n")
    shutil.copyfile(log, f"{log}.1")
    os.truncate(log, 0)
    _append(log, "5\n")
    assert _read(tailer, T0 + 4) == ["3", "4", "5"]
    assert _read(tailer, T0 + 6) == []


def test_a_truncated_file_that_regrew_past_the_offset_is_read_from_its_start(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "short\n")
    assert _read(tailer, T0 + 2) == ["short"]
    os.truncate(log, 0)
    regrown = [f"after truncation, line {n} with enough text to pass the old offset" for n in range(5)]
    _append(log, "".join(line + "\n" for line in regrown))
    assert _read(tailer, T0 + 4) == regrown


def test_plain_truncation_then_new_lines(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "before\n")
    assert _read(tailer, T0 + 2) == ["before"]
    with open(log, "w"):
        pass  # `: > file`
    _append(log, "x\n")
    assert _read(tailer, T0 + 4) == ["x"]


def test_a_restart_resumes_after_the_last_committed_batch(tmp_path: Path, log: Path) -> None:
    first = _tailer(tmp_path, log)
    _read(first)
    _append(log, "1\n2\n")
    assert _read(first, T0 + 2) == ["1", "2"]
    first.close()
    _append(log, "3\n")
    second = _tailer(tmp_path, log)
    _append(log, "4\n")
    assert _read(second, T0 + 4) == ["3", "4"]


def test_an_uncommitted_batch_is_read_again_after_a_restart(tmp_path: Path, log: Path) -> None:
    first = _tailer(tmp_path, log)
    assert first.poll(T0) is None
    _append(log, "1\n2\n")
    assert _lines(first.poll(T0 + 2)) == ["1", "2"]  # never delivered, so never committed
    first.close()
    second = _tailer(tmp_path, log)
    assert _read(second, T0 + 4) == ["1", "2"]


def test_committing_an_older_batch_after_a_newer_one_does_not_move_back(tmp_path: Path, log: Path) -> None:
    first = _tailer(tmp_path, log, max_lines=1)
    _read(first)
    _append(log, "1\n2\n")
    older, newer = first.poll(T0 + 2), first.poll(T0 + 2)
    assert older is not None and newer is not None
    newer.commit()
    older.commit()
    first.close()
    assert _read(_tailer(tmp_path, log), T0 + 4) == []


def test_a_file_started_after_a_batch_keeps_its_start_when_that_batch_is_committed(
        tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, tmp_path / "*.log")
    _read(tailer)
    _append(log, "a\n")
    older = tailer.poll(T0 + 2)
    other = tmp_path / "other.log"
    other.write_text("b\n")
    assert _lines(tailer.poll(T0 + 10)) == ["b"]  # found by the rescan; this batch is never delivered
    assert older is not None and _lines(older) == ["a"]
    older.commit()
    tailer.close()
    assert _read(_tailer(tmp_path, tmp_path / "*.log"), T0 + 20) == ["b"]


def test_a_rotation_while_stopped_reads_the_rest_of_the_old_file_first(tmp_path: Path, log: Path) -> None:
    first = _tailer(tmp_path, log)
    _read(first)
    _append(log, "1\n")
    assert _read(first, T0 + 2) == ["1"]
    first.close()
    _append(log, "2\n")
    os.rename(log, f"{log}.1")
    log.write_text("3\n")
    assert _read(_tailer(tmp_path, log), T0 + 4) == ["2", "3"]


def test_a_copytruncate_while_stopped_reads_the_rest_from_the_copy_first(tmp_path: Path, log: Path) -> None:
    first = _tailer(tmp_path, log)
    _read(first)
    _append(log, "1\n")
    assert _read(first, T0 + 2) == ["1"]
    first.close()
    _append(log, "2\n")
    shutil.copyfile(log, f"{log}-20240101")
    os.truncate(log, 0)
    _append(log, "3\n")
    assert _read(_tailer(tmp_path, log), T0 + 4) == ["2", "3"]


def test_offsets_are_saved_as_json_with_inode_and_fingerprint(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "1\n")
    _read(tailer, T0 + 2)
    saved = json.loads((tmp_path / "offsets.json").read_text())
    info = os.stat(log)
    assert saved[str(log)]["ino"] == info.st_ino
    assert saved[str(log)]["dev"] == info.st_dev
    assert saved[str(log)]["offset"] == info.st_size
    assert len(saved[str(log)]["head"]) == 64
    assert not (tmp_path / "offsets.json.tmp").exists()


def test_batches_are_bounded_in_lines(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log, max_lines=1000)
    _read(tailer)
    _append(log, "".join(f"line {n}\n" for n in range(2500)))
    sizes, lines = [], []
    while (batch := tailer.poll(T0 + 2)) is not None:
        sizes.append(len(batch.entries))
        lines += _lines(batch)
        batch.commit()
    assert sizes == [1000, 1000, 500]
    assert lines == [f"line {n}" for n in range(2500)]


def test_batches_are_bounded_in_bytes(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log, max_bytes=1000)
    _read(tailer)
    _append(log, "".join(f"{n:03d}" + "x" * 96 + "\n" for n in range(50)))  # 99 bytes of text each
    batch = tailer.poll(T0 + 2)
    assert batch is not None and len(batch.entries) == 11
    batch.commit()
    assert len(_read(tailer, T0 + 2)) == 39


def test_nul_and_invalid_utf8_become_replacement_characters(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    with open(log, "ab") as handle:
        handle.write(b"a\x00b\nbad \xff byte\n\n")
    assert _read(tailer, T0 + 2) == ["a\ufffdb", "bad \ufffd byte"]


def test_a_line_of_invalid_bytes_stays_within_the_cap_once_replaced(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    with open(log, "ab") as handle:
        handle.write(b"\xff" * LINE_MAX_BYTES + b"\n")  # each bad byte becomes a 3-byte U+FFFD
    (line,) = _read(tailer, T0 + 2)
    assert set(line) == {"\ufffd"}
    assert len(line.encode("utf-8")) <= LINE_MAX_BYTES


def test_a_very_long_line_is_split_at_character_boundaries(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    long_line = "x" + "é" * 10_000  # 20,001 bytes: a cut at 8,192 bytes would split a two-byte character
    _append(log, long_line + "\nshort\n")
    lines = _read(tailer, T0 + 2)
    assert lines[-1] == "short"
    assert len(lines) == 4
    assert all(len(piece.encode("utf-8")) <= LINE_MAX_BYTES for piece in lines)
    assert "".join(lines[:-1]) == long_line


def test_a_long_line_without_newline_is_sent_once_over_the_cap(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "y" * (LINE_MAX_BYTES + 10))
    assert _read(tailer, T0 + 2) == ["y" * LINE_MAX_BYTES]
    _append(log, "\n")
    assert _read(tailer, T0 + 3) == ["y" * 10]


def test_a_glob_picks_up_a_new_file_from_its_start(tmp_path: Path, log: Path) -> None:
    tailer = LogTailer(tmp_path / "offsets.json", rescan_interval=10)
    tailer.set_paths([str(tmp_path / "*.log")])
    assert tailer.poll(T0) is None
    other = tmp_path / "other.log"
    other.write_text("first\nsecond\n")
    assert tailer.poll(T0 + 2) is None  # not rescanned yet
    batch = tailer.poll(T0 + 10)
    assert batch is not None and _lines(batch) == ["first", "second"]
    assert batch.entries[0]["source"] == str(other)


def test_a_broad_glob_does_not_follow_rotated_copies(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, tmp_path / "app*")
    _read(tailer)
    _append(log, "1\n")
    os.rename(log, f"{log}.1")
    log.write_text("2\n")
    Path(f"{log}.2.gz").write_bytes(b"\x1f\x8b")
    assert _read(tailer, T0 + 20) == ["1", "2"]
    assert _read(tailer, T0 + 40) == []


def test_a_rotated_copy_under_an_unusual_name_is_not_read_twice(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, tmp_path / "app*")
    _read(tailer)
    _append(log, "1\n")
    os.rename(log, f"{log}.old")
    log.write_text("2\n")
    assert _read(tailer, T0 + 20) == ["1", "2"]
    _append(log, "3\n")
    assert _read(tailer, T0 + 22) == ["3"]


def test_a_renamed_file_is_still_read_while_its_path_is_missing(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    os.rename(log, f"{log}.1")
    _append(Path(f"{log}.1"), "late\n")
    assert _read(tailer, T0 + 20) == ["late"]  # a rescan happened meanwhile
    log.write_text("new\n")
    assert _read(tailer, T0 + 22) == ["new"]


def test_a_file_created_after_start_at_a_configured_path_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    tailer = _tailer(tmp_path, path)
    assert tailer.poll(T0) is None
    path.write_text("early line\n")
    assert _read(tailer, T0 + 10) == ["early line"]


def test_a_new_file_is_read_from_its_start_even_after_an_uncommitted_restart(tmp_path: Path) -> None:
    path = tmp_path / "later.log"
    first = _tailer(tmp_path, path)
    assert first.poll(T0) is None
    path.write_text("early line\n")
    assert _lines(first.poll(T0 + 10)) == ["early line"]
    first.close()
    assert _read(_tailer(tmp_path, path), T0 + 20) == ["early line"]


def test_a_deleted_file_is_read_to_its_end_then_forgotten(tmp_path: Path, log: Path) -> None:
    tailer = _tailer(tmp_path, log)
    _read(tailer)
    _append(log, "last words\n")
    log.unlink()
    assert _read(tailer, T0 + 2) == ["last words"]
    assert _read(tailer, T0 + 4) == []
    assert str(log) not in json.loads((tmp_path / "offsets.json").read_text())
    log.write_text("reborn\n")
    assert _read(tailer, T0 + 20) == ["reborn"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_reported_once_and_skipped(
        tmp_path: Path, log: Path, caplog: pytest.LogCaptureFixture) -> None:
    log.chmod(0)
    tailer = _tailer(tmp_path, log)
    with caplog.at_level(logging.WARNING, logger="hostatlas_agent.logs"):
        assert tailer.poll(T0) is None
        assert tailer.poll(T0 + 20) is None
    assert len(caplog.records) == 1


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {n}\n" for n in range(100_000)))
    assert tail(str(path), 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail(str(path), 0) == []


def test_tail_of_a_short_file_without_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "short.log"
    path.write_text("a\nb\r\nc")
    assert tail(str(path), 10) == ["a", "b", "c"]


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert tail(str(tmp_path / "missing.log"), 5) == []

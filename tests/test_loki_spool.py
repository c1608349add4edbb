"""The disk spool: order, acknowledgement, bounds, crash and damage recovery."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from exporter.loki import spool as spool_mod
from exporter.loki.spool import Spool
from exporter.loki.spoolstate import StateFiles


def payloads(n: int, size: int = 100, start: int = 0) -> list[bytes]:
    return [f"{i:08d}".encode().ljust(size, b".") for i in range(start, start + n)]


def drain(s: Spool, batch: int = 1 << 20) -> list[bytes]:
    """Read and acknowledge everything."""
    out: list[bytes] = []
    pos = s.head()
    while True:
        records, pos = s.read(pos, batch)
        if not records:
            return out
        out += [r.payload for r in records]
        s.ack(records[-1].end, len(records))


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=4096)
    for i in range(10):
        assert s.append(payloads(20, start=i * 20))
    assert len(segments(tmp_path)) > 5
    assert s.stats().entries == 200
    assert drain(s, 3000) == payloads(200)
    st = s.stats()
    assert (st.entries, st.bytes, st.oldest_append_ts) == (0, 0, None)
    # Acknowledged segments are gone.
    assert sum(p.stat().st_size for p in segments(tmp_path)) == 0


def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=4096)
    s.append(payloads(100))
    records, _ = s.read(s.head(), 2500)
    s.ack(records[-1].end, len(records))
    done = len(records)
    # No close(): the process dies here.
    s2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=4096)
    assert s2.stats().entries == 100 - done
    assert drain(s2) == payloads(100)[done:]


def test_full_spool_refuses_whole_batches_and_takes_them_after_acks(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), max_bytes=10_000, segment_bytes=2048)
    taken = 0
    while s.append(payloads(10, start=taken)):
        taken += 10
    before = s.stats()
    assert before.disk_bytes <= 10_000
    assert not s.append(payloads(10))
    assert s.stats().entries == before.entries == taken
    assert drain(s) == payloads(taken)
    assert s.append(payloads(10))


def test_oldest_entry_age_follows_acknowledgements(tmp_path: Path) -> None:
    clock = Clock()
    s = Spool(str(tmp_path), clock=clock, segment_bytes=1 << 16)
    s.append(payloads(1))
    clock.t += 10
    s.append(payloads(1, start=1))
    assert s.stats().oldest_append_ts == pytest.approx(clock.t - 10)
    records, _ = s.read(s.head(), 1)
    assert len(records) == 1
    s.ack(records[0].end, 1)
    assert s.stats().oldest_append_ts == pytest.approx(clock.t)


def test_torn_tail_is_cut_counted_and_good_records_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    s.append(payloads(50))
    s.close()
    seg = segments(tmp_path)[-1]
    good_size = seg.stat().st_size
    # Power loss in the middle of the next append: half a record on disk.
    torn = spool_mod.encode(b"z" * 500, 0.0)[:260]
    with open(seg, "ab") as f:
        f.write(torn)
    caplog.set_level(logging.WARNING)
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    st = s2.stats()
    assert st.entries == 50
    assert st.corrupt_records == 1
    assert seg.stat().st_size == good_size
    assert "torn" in caplog.text
    # Appends continue on a clean end.
    s2.append(payloads(5, start=50))
    assert drain(s2) == payloads(55)


def test_damaged_record_in_the_middle_costs_only_itself(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    s.append(payloads(30))
    s.close()
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    record = len(spool_mod.encode(payloads(1)[0], 0.0))
    data[record * 10 + 40] ^= 0xFF  # a bit flip inside record 10's payload
    seg.write_bytes(bytes(data))
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert s2.stats().corrupt_records == 1
    assert s2.stats().entries == 29
    expected = payloads(30)
    del expected[10]
    assert drain(s2, 500) == expected
    # Counted once, not again when read.
    assert s2.stats().corrupt_records == 1


def test_damage_found_while_reading_is_skipped_and_counted(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    s.append(payloads(20))
    seg = segments(tmp_path)[-1]
    record = len(spool_mod.encode(payloads(1)[0], 0.0))
    with open(seg, "r+b") as f:
        f.seek(record * 5 + 30)
        f.write(b"\x00\x00\x00\x00")
    got = drain(s)
    expected = payloads(20)
    del expected[5]
    assert got == expected
    st = s.stats()
    assert (st.corrupt_records, st.entries) == (1, 0)


def test_damaged_ack_file_resends_everything(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    s.append(payloads(10))
    records, _ = s.read(s.head(), 300)
    s.ack(records[-1].end, len(records))
    (tmp_path / "ack").write_bytes(b"garbage")
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert drain(s2) == payloads(10)


def test_fully_acknowledged_segment_is_removed_and_numbering_continues(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    s.append(payloads(3))
    drain(s)
    assert [p.stat().st_size for p in segments(tmp_path)] == []
    s.append(payloads(3, start=3))
    names = [p.name for p in segments(tmp_path)]
    assert names == ["0000000000000001.seg"]
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert drain(s2) == payloads(3, start=3)


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies_store_the_same_data(
    tmp_path: Path, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    clock = Clock()
    s = Spool(str(tmp_path), fsync=policy, fsync_interval=5.0, clock=clock)
    for i in range(4):
        s.append(payloads(5, start=i * 5))
    after_appends = len(synced)
    clock.t += 6
    s.sync_if_due()
    if policy == "always":
        assert after_appends == 4
    elif policy == "interval":
        assert after_appends == 0 and len(synced) == 1
    else:
        assert len(synced) == 0
    s2 = Spool(str(tmp_path))
    assert drain(s2) == payloads(20)


def test_a_record_larger_than_a_read_chunk_is_read_whole(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    big = b"B" * (3 << 20)
    s.append([b"small", big, b"after"])
    records, pos = s.read(s.head(), 10)
    assert [r.payload for r in records] == [b"small"]
    records, pos = s.read(pos, 10)
    assert [r.payload for r in records] == [big]
    records, pos = s.read(pos, 10)
    assert [r.payload for r in records] == [b"after"]


def test_concurrent_appends_and_acks_lose_nothing_and_resend_nothing(tmp_path: Path) -> None:
    """Three writers append while a reader takes chunks (read_chunk) and acks
    them, as the sender does; every record is read exactly once, each
    writer's records in its own order, and a restart finds nothing left."""
    # 64 KiB holds well under half of what is written: writers meet a full spool.
    s = Spool(str(tmp_path), max_bytes=64 << 10, segment_bytes=16 << 10, fsync="never")
    per_writer, writers = 600, 3

    def write(w: int) -> None:
        for i in range(0, per_writer, 20):
            batch = [f"{w}:{j:05d}".encode().ljust(80, b".") for j in range(i, i + 20)]
            while not s.append(batch):  # full: wait for the reader's acks
                with s.changed:
                    s.changed.wait(0.05)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    got: list[bytes] = []
    pos = s.head()
    deadline = time.monotonic() + 60
    while len(got) < per_writer * writers:
        assert time.monotonic() < deadline, f"only {len(got)} records read"
        chunk = s.read_chunk(pos, 8 << 10)
        pos = chunk.cursor
        if chunk.end is None:
            with s.changed:
                s.changed.wait(0.05)
            continue
        got += chunk.payloads
        s.ack(chunk.end, len(chunk.payloads))
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == per_writer * writers
    for w in range(writers):
        mine = [p for p in got if p.startswith(f"{w}:".encode())]
        assert mine == sorted(mine)
    assert s.empty()
    s.close()
    again = Spool(str(tmp_path), max_bytes=64 << 10, segment_bytes=16 << 10, fsync="never")
    assert drain(again) == []


# --- marks: a source's resume position, in the same write as its batch --------------


def test_marks_are_no_entries_and_the_last_one_survives_a_restart(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=4096)
    assert s.last_mark() is None
    assert s.append(payloads(20), b"mark-1")
    assert s.append([], b"mark-2")  # a batch of invalid lines still moves the mark
    assert s.append(payloads(10, start=20), b"mark-3")
    assert s.stats().entries == 30
    assert s.last_mark() == b"mark-3"
    s.close()
    s2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=4096)
    assert s2.stats().entries == 30
    assert s2.last_mark() == b"mark-3"
    assert drain(s2) == payloads(30)  # readers skip the marks
    assert s2.stats().corrupt_records == 0


def test_the_last_mark_outlives_the_segments_acknowledged_and_deleted(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=2048)
    for i in range(10):
        assert s.append(payloads(10, start=10 * i), f"mark-{i}".encode())
    assert drain(s) == payloads(100)
    assert s.empty()
    s.close()
    # Every segment that held a mark is gone; the mark is not.
    s2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=2048)
    assert s2.last_mark() == b"mark-9"
    assert s2.stats().entries == 0
    # A newer mark in a segment wins over the saved one.
    assert s2.append(payloads(1, start=100), b"mark-10")
    s2.close()
    assert Spool(str(tmp_path), segment_bytes=2048).last_mark() == b"mark-10"


@pytest.mark.parametrize("cut", [0, 7, 300])
def test_a_batch_cut_before_its_mark_is_cut_off_whole(tmp_path: Path, cut: int) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert s.append(payloads(5), b"mark-1")
    assert s.append(payloads(2, start=5))  # unmarked (a webhook batch): kept
    before = segments(tmp_path)[-1].stat().st_size
    assert s.append(payloads(3, start=7), b"mark-2")
    s.close()
    seg = segments(tmp_path)[-1]
    # kill -9 in the middle of the last append: some of its records, not its mark.
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - spool_mod.HEADER_SIZE - len(b"mark-2") - cut)
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert s2.last_mark() == b"mark-1"
    assert s2.stats().entries == 7
    assert seg.stat().st_size == before
    assert drain(s2) == payloads(7)


def test_the_last_mark_survives_a_crash_right_after_the_ack_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=2048)
    for i in range(10):
        assert s.append(payloads(10, start=10 * i), f"mark-{i}".encode())
    records, after = s.read(s.head(), 1 << 20)
    assert len(records) == 100

    class Crash(Exception):
        pass

    write_ack = Spool._write_ack

    def crash(self: Spool, pos: tuple[int, int]) -> None:
        write_ack(self, pos)
        raise Crash  # kill -9 before the segments behind the ack are deleted

    monkeypatch.setattr(Spool, "_write_ack", crash)
    with pytest.raises(Crash):
        s.ack(after, len(records))  # everything, the last mark too
    monkeypatch.undo()
    # The next start deletes the acknowledged segments without reading them.
    s2 = Spool(str(tmp_path), max_bytes=1 << 20, segment_bytes=2048)
    assert s2.stats().entries == 0
    assert s2.last_mark() == b"mark-9"


def test_a_batch_cut_before_its_mark_is_cut_off_across_segments(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1024)
    assert s.append(payloads(5), b"mark-1")
    first = len(segments(tmp_path))
    assert s.append(payloads(20, start=5), b"mark-2")  # over three segments
    s.close()
    assert len(segments(tmp_path)) >= first + 2
    last = segments(tmp_path)[-1]
    with open(last, "r+b") as f:  # killed before the mark's part of the write
        f.truncate(last.stat().st_size - spool_mod.HEADER_SIZE - len(b"mark-2"))
    s2 = Spool(str(tmp_path), segment_bytes=1024)
    assert s2.last_mark() == b"mark-1"
    assert s2.stats().entries == 5
    assert len(segments(tmp_path)) == first
    assert drain(s2) == payloads(5)
    assert s2.append(payloads(20, start=5), b"mark-2")
    assert drain(s2) == payloads(20, start=5)


# --- records acknowledged ahead of the head (parallel pushes) -----------------


def ack_ahead(s: Spool, n: int = 10, head: int = 2, ahead: tuple[int, ...] = (3, 6, 7)) -> None:
    """Append ``n`` records; acknowledge the first ``head`` as the head and
    the ``ahead`` ones out of order, as parallel pushes answer them."""
    assert s.append(payloads(n))
    records, _ = s.read(s.head(), 1 << 20)
    assert len(records) == n
    s.ack(records[head - 1].end, head + len(ahead), [records[i].start for i in ahead])


def test_a_restart_skips_records_acknowledged_ahead_of_the_head(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    ack_ahead(s)
    assert s.stats().entries == 5
    # kill -9: no close().
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert s2.stats().entries == 5
    expected = [p for i, p in enumerate(payloads(10)) if i not in (0, 1, 3, 6, 7)]
    chunk = s2.read_chunk(s2.head(), 1 << 20)
    assert chunk.payloads == expected
    assert chunk.skipped == 3
    # The chunk ends after the last record, skipped or not: acknowledging it
    # empties the spool, and the next start finds nothing.
    assert chunk.end is not None
    s2.ack(chunk.end, len(chunk.payloads))
    assert s2.empty()
    assert drain(Spool(str(tmp_path), segment_bytes=1 << 20)) == []


def test_records_acknowledged_ahead_stay_acknowledged_over_two_restarts(tmp_path: Path) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    ack_ahead(s)
    s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
    # The second lifetime answers for record 4 only, then dies too: the first
    # lifetime's answers must not be forgotten when it writes its own.
    chunk = s2.read_chunk(s2.head(), 1 << 20)
    assert chunk.payloads[1] == payloads(10)[4]
    s2.ack(None, 1, [chunk.starts[1]])
    s3 = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert drain(s3) == [payloads(10)[i] for i in (2, 5, 8, 9)]


def test_a_damaged_acked_file_resends_those_records_and_keeps_the_head(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    ack_ahead(s)
    acked = tmp_path / "acked"
    data = acked.read_bytes()
    caplog.set_level(logging.WARNING)
    for torn in (data[: len(data) - 5], data[:3], data[:-1] + bytes([data[-1] ^ 1])):
        acked.write_bytes(torn)  # a torn write, or a flipped bit
        s2 = Spool(str(tmp_path), segment_bytes=1 << 20)
        assert "acked file is damaged" in caplog.text
        caplog.clear()
        # At least once: what it named comes again; the head still holds.
        assert s2.stats().entries == 8
        records, _ = s2.read(s2.head(), 1 << 20)
        assert [r.payload for r in records] == payloads(10)[2:]


def test_acknowledged_positions_past_the_end_never_skip_later_records(tmp_path: Path) -> None:
    # Four records fill a segment exactly.
    size = 4 * (100 + spool_mod.HEADER_SIZE)
    s = Spool(str(tmp_path), segment_bytes=size)
    assert s.append(payloads(4))
    records, _ = s.read(s.head(), 1 << 20)
    s.close()
    seg = segments(tmp_path)[-1]
    assert seg.stat().st_size == size
    # The acked file names record 3, the start of the next segment and one
    # far away; then record 3 is lost (a torn tail), so the next appends go
    # where record 3 was and to the start of the next segment.
    files = StateFiles(str(tmp_path), "always")
    files.write_acked({records[3].start, (records[3].start[0] + 1, 0), (99, 12)})
    with open(seg, "r+b") as f:
        f.truncate(size - 10)
    s2 = Spool(str(tmp_path), segment_bytes=size)
    assert s2.stats().entries == 3
    assert s2.append(payloads(2, start=100))
    assert len(segments(tmp_path)) == 2
    s2.close()
    s3 = Spool(str(tmp_path), segment_bytes=size)
    assert drain(s3) == [*payloads(3), *payloads(2, start=100)]


def test_acknowledging_ahead_writes_the_acked_file_only_when_it_gains_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Spool(str(tmp_path), segment_bytes=1 << 20)
    assert s.append(payloads(6))
    records, _ = s.read(s.head(), 1 << 20)
    written: list[set[tuple[int, int]]] = []
    real = Spool._write_acked

    def spy(self: Spool, positions: set[tuple[int, int]]) -> None:
        written.append(set(positions))
        real(self, positions)

    monkeypatch.setattr(Spool, "_write_acked", spy)
    s.ack(records[0].end, 1)  # in order: no acked file
    s.ack(None, 1, [records[2].start])
    s.ack(records[2].end, 1, [records[1].start])  # behind the new head: nothing to add
    s.ack(None, 1, [records[4].start])
    assert written == [{records[2].start}, {records[4].start}]
    assert s.stats().entries == 2

"""In-flight markers: a record a processor keeps dying on is given up on, not re-read for ever.

Each ``InFlight`` here plays one process; dropping it without ``clear`` is the process dying (a
crash, ``kill -9`` during a hang, an out-of-memory kill) with the record in flight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.inflight import InFlight

T = "ledger.evaluation-requests"


def die(process: InFlight) -> None:
    process.close()  # no clear(): whatever was in flight stays marked


def test_a_record_is_given_up_on_after_it_was_in_flight_at_two_deaths(tmp_path: Path) -> None:
    first = InFlight(tmp_path)
    for offset in (5, 6, 7):
        assert first.begin(T, 0, offset) == 0
    first.clear()
    assert first.begin(T, 0, 8) == 0
    die(first)  # on offset 8

    second = InFlight(tmp_path)
    assert second.begin(T, 0, 8) == 0  # one death proves nothing: handled again
    die(second)  # on offset 8 again

    third = InFlight(tmp_path)
    assert third.begin(T, 0, 8) == 2  # dead-letter it
    assert third.begin(T, 0, 9) == 0  # and the records after it are handled
    third.clear()
    die(third)

    fourth = InFlight(tmp_path)
    assert fourth.begin(T, 0, 8) == 0  # a clean stop leaves nothing to suspect


def test_records_redelivered_before_the_suspect_do_not_clear_it(tmp_path: Path) -> None:
    first = InFlight(tmp_path)
    first.begin(T, 0, 10)
    die(first)
    second = InFlight(tmp_path)
    # The offsets before it were not committed yet: they come again first, in batches.
    for offset in (7, 8, 9):
        assert second.begin(T, 0, offset) == 0
    second.clear()
    assert second.begin(T, 0, 10) == 0  # second attempt
    die(second)
    third = InFlight(tmp_path)
    for offset in (7, 8, 9):
        assert third.begin(T, 0, offset) == 0
    assert third.begin(T, 0, 10) == 2


def test_a_suspect_handled_elsewhere_is_forgotten(tmp_path: Path) -> None:
    first = InFlight(tmp_path)
    first.begin(T, 0, 10)
    die(first)
    second = InFlight(tmp_path)
    assert second.begin(T, 0, 12) == 0  # committed past it: another worker answered it
    second.clear()
    die(second)
    third = InFlight(tmp_path)
    assert third.begin(T, 0, 10) == 0  # an offset reset, say: nothing remembered against it


def test_partitions_and_topics_are_kept_apart(tmp_path: Path) -> None:
    first = InFlight(tmp_path)
    first.begin(T, 0, 3)
    first.begin(T, 1, 3)
    first.begin("ledger.commands", 0, 3)
    die(first)
    second = InFlight(tmp_path)
    assert [second.begin(T, 1, 3), second.begin("ledger.commands", 0, 4)] == [0, 0]
    die(second)
    third = InFlight(tmp_path)
    # Partition 0 died once (first), partition 1 twice (first, second), commands moved on.
    assert [third.begin(T, 0, 3), third.begin(T, 1, 3), third.begin("ledger.commands", 0, 3)] == [
        0,
        2,
        0,
    ]


def test_a_partition_taken_over_from_a_dead_worker_is_covered(tmp_path: Path) -> None:
    # Two workers on one machine share the directory; b takes over a's partition after a dies.
    a, b = InFlight(tmp_path), InFlight(tmp_path)
    b.begin(T, 1, 0)
    b.clear()
    a.begin(T, 0, 4)
    die(a)
    assert b.begin(T, 0, 4) == 0
    die(b)
    c = InFlight(tmp_path)
    assert c.begin(T, 0, 4) == 2


def test_a_torn_or_foreign_marker_is_ignored(tmp_path: Path) -> None:
    (tmp_path / f"{T}.0").write_bytes(b"garbage")
    assert InFlight(tmp_path).begin(T, 0, 0) == 0


def test_one_strike_mode(tmp_path: Path) -> None:
    first = InFlight(tmp_path, strikes=1)
    first.begin(T, 0, 1)
    die(first)
    assert InFlight(tmp_path, strikes=1).begin(T, 0, 1) == 1
    with pytest.raises(ValueError):
        InFlight(tmp_path, strikes=0)

"""``KafkaTransport.close()`` at its edges, without a broker: the librdkafka producer and the
reply listener are stand-ins that record what close asks of them.

A review: a Ctrl-C during close's 5 s flush (now also run at interpreter exit for a client
never closed) skipped the purge, and the process waited 5 minutes on what Kafka had not taken;
a client copied into a child by fork() took the transport's lock first, and the child hung at
exit when a parent's thread held it at the fork.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from ledger.kafka.transport import KafkaTransport


class _Producer:
    def __init__(self, interrupt: bool) -> None:
        self.interrupt = interrupt
        self.calls: list[str] = []

    def flush(self, timeout: float) -> int:
        self.calls.append(f"flush({timeout:g})")
        if self.interrupt and timeout:
            raise KeyboardInterrupt
        return 1  # one message Kafka has not taken

    def purge(self) -> None:
        self.calls.append("purge")

    def close(self) -> None:
        self.calls.append("close")


class _Listener:
    def close(self) -> None:
        pass


def _transport(producer: _Producer, *, pid: int | None = None) -> Any:
    transport: Any = object.__new__(KafkaTransport)
    transport._pid = os.getpid() if pid is None else pid
    transport._lock = threading.Lock()
    transport._closed = False
    transport._pending = {}
    transport._producer = producer
    transport._listener = _Listener()
    transport._position_lock = threading.Lock()
    transport._position_consumer = None
    transport._position_readers = 0
    transport._position_idle = threading.Condition(transport._position_lock)
    return transport


def test_an_interrupted_close_still_drops_what_kafka_has_not_taken() -> None:
    producer = _Producer(interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        _transport(producer).close()
    assert producer.calls[:3] == ["flush(5)", "purge", "flush(0)"]


def test_a_close_waits_then_drops_what_kafka_has_not_taken() -> None:
    producer = _Producer(interrupt=False)
    _transport(producer).close()
    assert producer.calls == ["flush(5)", "purge", "flush(0)", "close"]


def test_a_copy_from_before_a_fork_lets_go_without_its_lock_or_producer() -> None:
    producer = _Producer(interrupt=False)
    copy = _transport(producer, pid=os.getpid() + 1)  # made in another process
    copy._lock.acquire()  # as a parent's thread held it at the fork
    copy.close()  # must not wait for it
    assert copy._closed and producer.calls == []


def test_a_call_cut_short_by_close_names_its_request_and_whether_kafka_took_it() -> None:
    # An agent engineer's walkthrough: ten calls waiting when close() came each raised "the
    # ledger client was closed while waiting", naming no request, though each was still
    # decided later: the agent's log had no id to look its decision up by.
    from ledger.errors import ClientClosed
    from ledger.kafka.transport import Sent

    transport = _transport(_Producer(interrupt=False))
    taken, queued = Sent(), Sent()
    taken.written = True
    transport._pending = {b"req-taken": taken, b"req-queued": queued}
    transport.close()
    for future, rid, sent, fate in (
        (taken, "req-taken", True, "Kafka had taken it: it is still decided or applied"),
        (queued, "req-queued", False, "Kafka had not acknowledged it yet"),
    ):
        error = future.exception()
        assert isinstance(error, ClientClosed)
        assert (error.request_id, error.sent) == (rid, sent)
        assert f"waiting for the answer to {rid}. {fate}" in str(error)
        assert f"`ledger decisions --request {rid}`" in str(error)

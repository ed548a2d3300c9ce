"""The command processor's Kafka side (processors.command_loop), with fakes for librdkafka:
events acknowledged before the answer, the answer before the commit, and a refused output stops
the process before any commit (the broker itself: tests/integration)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from processors import common
from processors.command_handler import Step
from processors.command_loop import FETCH_WAIT, MAX_FETCH, CommandLoop, Outbox


class _Producer:
    def __init__(self, log: list[Any], *, refuse: Exception | None = None) -> None:
        self.log, self.refuse = log, refuse
        self.failing: Any = None  # the error the next delivery reports
        self._queued: list[Any] = []

    def produce(self, topic: str, *, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.log.append(("produce", topic, value))
        self._queued.append(on_delivery)

    def flush(self, timeout: float) -> int:
        self.log.append(("flush",))
        for delivered in self._queued:
            delivered(self.failing, None)
        self._queued.clear()
        return 0


class _Message:
    def __init__(self, offset: int, error: Any = None) -> None:
        self._offset, self._error = offset, error

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return "ledger.commands"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"command"


class _Consumer:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> None:
        assert not asynchronous
        self.log.append(("commit", offsets[0].offset))


class _Handler:
    def __init__(self, step: Step) -> None:
        self.step = step
        self.seen: list[Any] = []

    def handle(self, state: Any, record: Any) -> Step:
        self.seen.append((record.topic, record.partition, record.offset, record.value))
        return self.step


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    said: list[int] = []

    def exit_now(code: int) -> None:
        said.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(common.os, "_exit", exit_now)
    return said


_SETTINGS = SimpleNamespace(
    security=None, topics=SimpleNamespace(commands="ledger.commands"), home="/nonexistent/home"
)


def _loop(log: list[Any], handler: _Handler, producer: _Producer) -> CommandLoop:
    return CommandLoop(
        bootstrap="127.0.0.1:9",
        settings=_SETTINGS,  # type: ignore[arg-type]  # what the loop reads of Settings
        group_id="g",
        handler=handler,  # type: ignore[arg-type]
        outbox=Outbox(lambda: producer),
        state=lambda: "state",  # type: ignore[arg-type,return-value]
        apply=lambda event: log.append(("apply", event)),
    )


def test_a_commands_events_are_acknowledged_and_applied_before_its_answer_then_committed() -> None:
    log: list[Any] = []
    step = Step(
        events=[("grant", ("ledger.grant-events", b"a", b"event"))],  # type: ignore[list-item]
        outputs=[("ledger.command-results", b"c", b"answer")],
    )
    handler = _Handler(step)
    loop = _loop(log, handler, _Producer(log))
    asyncio.run(loop._take(_Consumer(log), [_Message(41)]))
    assert handler.seen == [("ledger.commands", 0, 41, b"command")]
    assert log == [
        ("produce", "ledger.grant-events", b"event"),
        ("flush",),
        ("apply", "grant"),
        ("produce", "ledger.command-results", b"answer"),
        ("flush",),
        ("commit", 42),
    ]


def test_an_answer_the_broker_refuses_stops_the_process_before_the_commit(
    exits: list[int],
) -> None:
    log: list[Any] = []
    producer = _Producer(log)
    producer.failing = "MSG_SIZE_TOO_LARGE"
    loop = _loop(log, _Handler(Step(outputs=[("r", b"c", b"answer")])), producer)
    with pytest.raises(SystemExit):
        asyncio.run(loop._take(_Consumer(log), [_Message(7)]))
    assert exits == [common.DELIVERY_FAILED_EXIT]
    assert not [entry for entry in log if entry[0] == "commit"]


def test_a_fetch_is_answered_in_order_with_one_wait_and_one_commit() -> None:
    # A flood of garbage records (each a dead letter) must drain at thousands a second: one
    # wait for acknowledgements and one commit per fetch, not per record.
    log: list[Any] = []
    loop = _loop(log, _Handler(Step(outputs=[("letters", b"k", b"letter")])), _Producer(log))
    asyncio.run(loop._take(_Consumer(log), [_Message(n) for n in range(3)]))
    assert log == [
        *[("produce", "letters", b"letter")] * 3,
        ("flush",),
        ("commit", 3),
    ]


def test_a_send_refused_on_the_spot_stops_the_process(exits: list[int]) -> None:
    outbox = Outbox(lambda: _Producer([], refuse=BufferError("Local: Queue full")))
    with pytest.raises(SystemExit):
        outbox.send("t", b"k", b"v")
    assert exits == [common.DELIVERY_FAILED_EXIT]


def test_a_consumer_error_commits_nothing_and_is_said_once_in_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class _Error:
        def fatal(self) -> bool:
            return False

        def code(self) -> int:
            return -195  # _TRANSPORT

        def str(self) -> str:
            return "Broker: transport failure"

    log: list[Any] = []
    loop = _loop(log, _Handler(Step()), _Producer(log))
    with caplog.at_level(logging.WARNING, logger="ledger.command-processor"):
        for _ in range(3):
            asyncio.run(loop._take(_Consumer(log), [_Message(-1001, error=_Error())]))
    assert log == []
    assert [r.getMessage() for r in caplog.records] == [
        "command consumer: Broker: transport failure"
    ]


def test_a_fenced_consumer_stops_the_loop_not_said_and_carried_on() -> None:
    # A second command processor with this one's identity (a static member) fences it:
    # librdkafka reports _FATAL, whose fatal() is false; the loop logged a warning and went on,
    # `ps` saying healthy while no command was read.
    from confluent_kafka import KafkaError, KafkaException

    class _Fenced:
        def fatal(self) -> bool:
            return False

        def code(self) -> int:
            return int(KafkaError._FATAL)

        def str(self) -> str:
            return "Fatal error: Broker: Static consumer fenced by other consumer"

    log: list[Any] = []
    loop = _loop(log, _Handler(Step()), _Producer(log))
    with pytest.raises(KafkaException):
        asyncio.run(loop._take(_Consumer(log), [_Message(-1001, error=_Fenced())]))
    assert log == []  # nothing committed


def test_the_commands_consumer_is_a_static_member_named_by_host_and_home(tmp_path: Any) -> None:
    from ledger.settings import Settings
    from processors.command_loop import consumer_config

    here = consumer_config(Settings(home=tmp_path / "a"), "g")
    assert here == consumer_config(Settings(home=tmp_path / "a"), "g")  # a restart: the same
    assert here["group.instance.id"].startswith("g@")
    assert (
        here["group.instance.id"]
        != consumer_config(Settings(home=tmp_path / "b"), "g")["group.instance.id"]
    )


def test_a_lone_command_is_fetched_at_once_not_after_the_fetch_wait() -> None:
    # librdkafka's consume(n, timeout) waits until it has n records: a lone command, an
    # emergency rollback say, would have waited the whole timeout before being answered.
    asked: list[Any] = []

    class _Fetching:
        def consume(self, *, num_messages: int, timeout: float) -> list[Any]:
            asked.append(("consume", num_messages, timeout))
            return []

        def poll(self, timeout: float) -> Any:
            asked.append(("poll", timeout))
            return "rollback"

    assert CommandLoop._fetch(_Fetching()) == ["rollback"]
    assert asked == [
        ("consume", MAX_FETCH, 0),
        ("poll", FETCH_WAIT),
        ("consume", MAX_FETCH - 1, 0),
    ]


def test_a_stop_during_a_fetch_closes_the_consumer_only_once_the_fetch_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stop cancels the loop while a fetch waits inside librdkafka; closing the consumer
    # under that fetch (from the event loop's thread) is use after free in librdkafka.
    import threading

    from processors import command_loop

    order: list[str] = []
    polling, release = threading.Event(), threading.Event()

    class _Waiting:
        def subscribe(self, topics: list[str]) -> None: ...

        def consume(self, *, num_messages: int, timeout: float) -> list[Any]:
            return []

        def poll(self, timeout: float) -> Any:
            order.append("fetch")
            polling.set()
            release.wait(5)
            order.append("fetch returned")
            return None

        def close(self) -> None:
            order.append("close")

    monkeypatch.setattr(command_loop, "make_rdkafka_consumer", lambda *a, **k: _Waiting())
    loop = _loop([], _Handler(Step()), _Producer([]))

    async def ready() -> None: ...

    async def scenario() -> None:
        task = asyncio.create_task(loop.run(ready))
        while not polling.is_set():
            # A loop that failed before its first fetch fails here, not waits for ever (a run
            # hung when the consumer's settings raised).
            assert not task.done(), task
            await asyncio.sleep(0.01)
        threading.Timer(0.2, release.set).start()  # the fetch returns while the stop waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert order[:3] == ["fetch", "fetch returned", "close"], order


def test_kafka_refusing_the_commands_for_long_stops_the_process_saying_why(
    exits: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A review: with the ACLs refusing the commands topic, the processor logged a warning every
    # 30 s and looked healthy (its follower was) while no command was answered.
    from confluent_kafka import KafkaError

    from processors import command_loop

    clock = [1000.0]
    monkeypatch.setattr(command_loop.time, "monotonic", lambda: clock[0])
    log: list[Any] = []
    loop = _loop(log, _Handler(Step()), _Producer(log))
    refused = _Message(-1001, error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    asyncio.run(loop._take(_Consumer(log), [refused]))
    clock[0] += 20
    asyncio.run(loop._take(_Consumer(log), [refused]))
    assert exits == []  # a refusal for a while (ACLs being applied) is waited out
    asyncio.run(loop._take(_Consumer(log), [_Message(5)]))  # a command read: it passed
    clock[0] += 20
    asyncio.run(loop._take(_Consumer(log), [refused]))
    assert exits == []  # a new spell
    clock[0] += command_loop.GIVE_UP_AFTER
    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit):
        asyncio.run(loop._take(_Consumer(log), [refused]))
    assert exits == [common.HANDLING_FAILED_EXIT]
    assert (
        "cannot read ledger.commands for 30 s, so no command is answered: Kafka's ACLs"
        in caplog.text
    )


def test_a_refusal_librdkafka_says_once_is_probed_until_it_lasts_or_ends(
    exits: list[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's drill: with its READ ACL on ledger.commands removed, the processor logged
    # one warning and looked healthy for four minutes: librdkafka says a refusal once, then
    # retries in silence, and a spell only grew when another refusal was said.
    from confluent_kafka import KafkaError

    from processors import command_loop

    clock = [1000.0]
    monkeypatch.setattr(command_loop.time, "monotonic", lambda: clock[0])
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    refused = _Message(-1001, error=denied)

    def spell(answers: list[Any]) -> tuple[CommandLoop, list[Any]]:
        log: list[Any] = []
        loop = _loop(log, _Handler(Step()), _Producer(log))
        asked: list[Any] = []

        def probe() -> Any:
            asked.append(clock[0])
            return answers.pop(0)

        monkeypatch.setattr(loop, "_probe", probe)
        asyncio.run(loop._take(_Consumer(log), [refused]))  # said once, then silence
        return loop, asked

    async def turn(loop: CommandLoop) -> None:
        await loop._probe_refusal(asyncio.get_running_loop())

    loop, asked = spell([denied, denied])
    clock[0] += 2
    asyncio.run(turn(loop))
    assert asked == []  # within PROBE_EVERY of the refusal: not yet
    clock[0] += command_loop.PROBE_EVERY
    asyncio.run(turn(loop))
    assert asked == [clock[0]] and exits == []  # refused again, for 7 s: waited out
    clock[0] += command_loop.GIVE_UP_AFTER
    with caplog.at_level(logging.CRITICAL), pytest.raises(SystemExit):
        asyncio.run(turn(loop))
    assert exits == [common.HANDLING_FAILED_EXIT]
    assert "cannot read ledger.commands for 37 s, so no command is answered" in caplog.text

    # Readable again (the ACL restored): the spell ends, and nothing stops later.
    exits.clear()
    loop, asked = spell([True])
    clock[0] += command_loop.PROBE_EVERY
    asyncio.run(turn(loop))
    assert loop._refusing is None
    clock[0] += 2 * command_loop.GIVE_UP_AFTER
    asyncio.run(turn(loop))
    assert asked == [clock[0] - 2 * command_loop.GIVE_UP_AFTER] and exits == []

    # The broker away (no word either way): no stop on that. A review: the probes without an
    # answer kept the spell open, and one refusal as the broker came back after a 10-minute
    # outage stopped the processor "refused for 600 s".
    loop, asked = spell([False] * 20)
    for _ in range(20):
        clock[0] += command_loop.GIVE_UP_AFTER
        asyncio.run(turn(loop))
    assert len(asked) == 20 and exits == []
    asyncio.run(loop._take(_Consumer([]), [refused]))  # a new spell, not the old one's end
    assert exits == []
    # A review: a minute's broker restart between two refusals (under the 120 s that joins
    # two refusals into one spell) read as "refused for 90 s" and stopped the processor.
    loop, asked = spell([False] * 18)
    for _ in range(18):
        clock[0] += command_loop.PROBE_EVERY
        asyncio.run(turn(loop))
    asyncio.run(loop._take(_Consumer([]), [refused]))
    assert len(asked) == 18 and exits == []


class _ProbeConsumer:
    """What ``CommandLoop._probe`` asks of its consumer: the topic's metadata, one read of its
    end, the group's commits."""

    def __init__(self, *, topic_error: Any = None, read: Any = None, group: Any = None) -> None:
        self.topic_error, self.read, self.group = topic_error, read, group
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> Any:
        described = SimpleNamespace(error=self.topic_error)
        return SimpleNamespace(topics={topic: described})

    def assign(self, partitions: list[Any]) -> None:
        pass

    def poll(self, timeout: float) -> Any:
        return None if self.read is None else _Message(7, error=self.read)

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import KafkaException

        if self.group is not None:
            raise KafkaException(self.group)
        return partitions

    def close(self) -> None:
        self.closed = True


def test_a_probe_reads_the_topic_and_the_groups_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    # A review: the probe's check of the group's commits (a refusal of the group, not the
    # topic) was tested by nothing: the loop's tests replace the probe.
    from confluent_kafka import KafkaError

    from processors import command_loop

    monkeypatch.setattr(command_loop, "_PROBE_WAIT", 0.05)
    eof = KafkaError(KafkaError._PARTITION_EOF)
    topic_denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    group_denied = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)
    loop = _loop([], _Handler(Step()), _Producer([]))
    for consumer, answer in (
        (_ProbeConsumer(read=eof), True),  # read to its end, the commits readable: over
        (_ProbeConsumer(read=None), False),  # no word within the wait: not known
        (_ProbeConsumer(topic_error=topic_denied), topic_denied),  # the topic's metadata
        (_ProbeConsumer(read=topic_denied), topic_denied),  # its read
        (_ProbeConsumer(read=eof, group=group_denied), group_denied),  # the group's commits
        (_ProbeConsumer(read=eof, group=KafkaError(KafkaError._TIMED_OUT)), False),
    ):
        monkeypatch.setattr(command_loop, "make_rdkafka_consumer", lambda *a, c=consumer, **k: c)
        said = loop._probe()
        assert said is answer or (
            isinstance(said, KafkaError) and said.code() == answer.code()  # type: ignore[union-attr]
        ), (said, answer)
        assert consumer.closed


def test_the_outbox_serves_its_producers_callbacks_between_commands() -> None:
    # An operator's drill: librdkafka's log lines of a broker's restart, queued in the producer
    # while no command came, came out minutes later stamped then: a fresh failure at 3 a.m.
    polled: list[float] = []

    class Producer(_Producer):
        def poll(self, timeout: float) -> int:
            polled.append(timeout)
            return 0

    log: list[Any] = []
    outbox = Outbox(lambda: Producer(log))
    outbox.poll()
    assert polled == []  # no producer made yet: nothing to serve
    outbox.send("t", b"k", b"v")
    outbox.poll()
    assert polled == [0]

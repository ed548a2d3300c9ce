"""A bare Kafka request/reply echo, no ledger code: the floor the SDK's round trip is held to.

The echo server runs in its own process (as the evaluator does): it reads the echo request topic
and writes every record back, same key and value, to the echo reply topic. An :class:`EchoClient`
publishes requests and completes a future per request when its echo arrives, matched by key —
the shape of the SDK's request/reply, with nothing of the ledger in it. Both sides exist for two
client libraries, so one run compares them on the same broker:

- ``librdkafka`` (``confluent-kafka``): producer ``linger.ms=0``, consumer woken by the fetch
  response;
- ``kafka-python``: producer ``linger_ms=0``, consumer polling with a small fetch wait.

Payloads are about the size of an evaluation request and of a decision trace. Against a secured
broker both sides authenticate like any client (``security``: the same SASL settings the ledger's
clients use, mapped to each library's names), so the floor pays what the SDK pays.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import uuid
from concurrent.futures import Future
from typing import Any

from ledger.kafka.clients import kafka_python_config, librdkafka_config
from ledger.kafka.reading import rdkafka_end_offset
from ledger.settings import KafkaSecurity

__all__ = ["LIBRARIES", "EchoServer", "EchoClient"]

LIBRARIES = ("librdkafka", "kafka-python")

REQUEST_BYTES = 300


def _serve(
    library: str,
    bootstrap: str,
    requests: str,
    replies: str,
    stop: Any,
    security: KafkaSecurity | None = None,
) -> None:
    """The echo server's process: copy every request record to the reply topic."""
    if library == "librdkafka":
        from confluent_kafka import Consumer, Producer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                **librdkafka_config(security),
                "group.id": f"echo-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 500,
                "socket.nagle.disable": True,
            }
        )
        end = rdkafka_end_offset(consumer, TopicPartition(requests, 0))
        consumer.assign([TopicPartition(requests, 0, end)])
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                **librdkafka_config(security),
                "linger.ms": 0,
                "socket.nagle.disable": True,
            }
        )
        while not stop.is_set():
            batch = consumer.consume(num_messages=1000, timeout=0)
            if not batch:
                first = consumer.poll(0.2)
                batch = [first] if first is not None else []
            for message in batch:
                if message.error() is None:
                    producer.produce(replies, message.value(), message.key())
            producer.poll(0)
        producer.flush(5)
        consumer.close()
    else:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        kconsumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            fetch_max_wait_ms=20,
            enable_auto_commit=False,
            **kafka_python_config(security),
        )
        tp = TopicPartition(requests, 0)
        kconsumer.assign([tp])
        kconsumer.seek_to_end(tp)
        kconsumer.position(tp)
        kproducer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=0, **kafka_python_config(security)
        )
        while not stop.is_set():
            for records in kconsumer.poll(timeout_ms=200).values():
                for record in records:
                    kproducer.send(replies, key=record.key, value=record.value)
        kproducer.flush(5)
        kconsumer.close()


class EchoServer:
    """The echo server process for one library (started, and ready, on construction)."""

    def __init__(
        self,
        library: str,
        bootstrap: str,
        requests: str,
        replies: str,
        security: KafkaSecurity | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve,
            args=(library, bootstrap, requests, replies, self._stop, security),
            name=f"echo-{library}",
            daemon=True,
        )
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)


class EchoClient:
    """Publishes echo requests and completes their futures when the echoes arrive."""

    def __init__(
        self,
        library: str,
        bootstrap: str,
        requests: str,
        replies: str,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.library = library
        self._requests = requests
        self._pending: dict[bytes, Future[None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._payload = os.urandom(REQUEST_BYTES)
        if library == "librdkafka":
            from confluent_kafka import Consumer, Producer, TopicPartition

            self._consumer: Any = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    **librdkafka_config(security),
                    "group.id": f"echo-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 500,
                    "socket.nagle.disable": True,
                }
            )
            end = rdkafka_end_offset(self._consumer, TopicPartition(replies, 0))
            self._consumer.assign([TopicPartition(replies, 0, end)])
            self._producer: Any = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    **librdkafka_config(security),
                    "linger.ms": 0,
                    "socket.nagle.disable": True,
                }
            )
            self._send = lambda key: self._producer.produce(requests, self._payload, key)
            target = self._listen_rdkafka
        else:
            from kafka import KafkaConsumer, KafkaProducer, TopicPartition

            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                fetch_max_wait_ms=20,
                enable_auto_commit=False,
                **kafka_python_config(security),
            )
            tp = TopicPartition(replies, 0)
            self._consumer.assign([tp])
            self._consumer.seek_to_end(tp)
            self._consumer.position(tp)
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap, linger_ms=0, **kafka_python_config(security)
            )
            self._send = lambda key: self._producer.send(requests, key=key, value=self._payload)
            target = self._listen_kafka_python
        self._thread = threading.Thread(target=target, name=f"echo-{library}", daemon=True)
        self._thread.start()

    def send(self, i: int) -> Future[None]:
        key = f"{i}-{uuid.uuid4().hex}".encode()
        future: Future[None] = Future()
        with self._lock:
            self._pending[key] = future
        self._send(key)
        return future

    def _arrived(self, key: bytes | None) -> None:
        with self._lock:
            future = self._pending.pop(key, None) if key is not None else None
        if future is not None:
            future.set_result(None)

    def _listen_rdkafka(self) -> None:
        while not self._stop.is_set():
            batch = self._consumer.consume(num_messages=1000, timeout=0)
            if not batch:
                first = self._consumer.poll(0.2)
                batch = [first] if first is not None else []
            for message in batch:
                if message.error() is None:
                    self._arrived(message.key())
            self._producer.poll(0)

    def _listen_kafka_python(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                for record in records:
                    self._arrived(record.key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.library == "librdkafka":
            self._producer.flush(5)
            self._producer.close()  # no reconnect attempts after the broker stops
        else:
            self._producer.close(5)
        self._consumer.close()

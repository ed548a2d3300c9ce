"""The one Kafka adapter: everything that talks to Kafka for the SDK, the CLI, replay, the
processors and the audit wing lives here, once.

- :mod:`~ledger.kafka.clients` — configured kafka-python clients (producer, consumer, admin),
  reachability checked before a client is made;
- :mod:`~ledger.kafka.reading` — a topic's partitions (one :class:`~ledger.errors.TopicMissing`
  for a topic that does not exist), a topic read to its end;
- :mod:`~ledger.kafka.topics` — the ledger's topics, partitions and configs, and their creation;
- :mod:`~ledger.kafka.acls` — who may read and write which topic (the roles' ACLs), and the
  processors' consumer groups;
- :mod:`~ledger.kafka.snapshots` — a processor's governance snapshot: written, checked, read;
- :mod:`~ledger.kafka.logs` — the Kafka libraries' repeated log lines thinned;
- :mod:`~ledger.kafka.governance` — the governance history (replay) and the live follower
  (processors);
- :mod:`~ledger.kafka.dedup` — the evaluator's de-duplication read (of the request partitions
  it is assigned);
- :mod:`~ledger.kafka.offsets` — a group's commit past its partition's end (a restored copy of a
  running home): started at the end, claimed there, said at ERROR;
- :mod:`~ledger.kafka.groups` — who holds which partitions in a consumer group, as the broker
  tells it (``ledger ps``/``up``), and how many records wait past a group's commits;
- :mod:`~ledger.kafka.transport` — the SDK's default transport (requests out, replies back by
  key, a listener that is restarted rather than dying silently).

May import: the core, :mod:`ledger.codec`, :mod:`ledger.contract`, :mod:`ledger.settings`,
:mod:`ledger.errors`, :mod:`ledger.files`, and Kafka client libraries. Never :mod:`ledger.local`
(the development launcher), :mod:`ledger.cli` or the processors (``tests/unit/test_layers.py``,
``WINGS``, enforces it). Nothing is imported here,
so importing one module does not load the others' client libraries.
"""

__all__: list[str] = []

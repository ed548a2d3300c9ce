"""Governance snapshots: a processor's caught-up state on its own disk, so its next start reads
the events after it instead of the whole history.

A snapshot is one file: a first line naming the format, a JSON header line, the state's policy
and principal records pickled, and a digest. What a start checks before the state is used:

- ``code``: a fingerprint of the code and schemas that built the state (the core's modules, the
  codec, the Avro schemas, this module, the package version). A state folded by other rules is not this
  code's state: after an upgrade the history is replayed once, and a new snapshot written.
- a trailer, the SHA-256 of the header and the pickled records, checked before they are
  unpickled (a torn or damaged file is never loaded);
- ``tails``: for each governance partition, the offset of the last record folded into the state
  and the SHA-256 of that record's value. The follower reads that one record back from Kafka
  and compares (:class:`~ledger.kafka.governance.GovernanceFollower`): a snapshot of another
  cluster, of topics deleted and re-created, or of a log since truncated is not used.

Any check that fails means a full replay, logged; never a partial or foreign state. Deleting
the file is always safe. The file is written 0600 under the processor's own state directory and
replaced atomically; its pickle is only as trustworthy as that directory, which must be as
private as the installation itself (whoever can write there can also change the code).
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import json
import operator
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import ledger
import ledger.core.authority
import ledger.core.events
import ledger.core.state
from ledger.contract import contract_dir
from ledger.core.builders import builder, field_names
from ledger.core.state import LedgerState
from ledger.files import replacing_private

__all__ = [
    "Snapshot",
    "SnapshotUnusable",
    "code_fingerprint",
    "read_snapshot",
    "record_digest",
    "write_snapshot",
]

MAGIC = b"ledger governance snapshot 1\n"
"""The first line of every snapshot file (the format's version is its last word)."""

DIGEST_BYTES = 64
"""The trailer: SHA-256 (hex) of everything between the first line and itself."""


class SnapshotUnusable(Exception):
    """A snapshot file that must not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state read back from a snapshot file and what to check it against.

    ``tails`` maps each position key (``"topic/partition"``) to the offset of the last record
    folded into ``state`` and the SHA-256 (hex) of that record's value.
    """

    state: LedgerState
    tails: Mapping[str, tuple[int, str]]
    events: int
    written_at: str


def _rebuilt(cls: type, *values: Any) -> Any:
    """An instance of the frozen, slotted dataclass ``cls`` from its field values (how a
    snapshot's records are unpickled: see :func:`_dispatch_table`)."""
    return builder(cls)(*values)


_OWN_TEXT: Final = frozenset({"document", "content_hash", "signed_command", "note"})
"""Text fields each record has its own of (as are the ``*_id`` fields): not worth sharing."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a snapshot's pickler needs to know of one class (see :func:`_dispatch_table`)."""

    cls: type
    values: Callable[[Any], tuple[Any, ...]]
    shared: tuple[int, ...] | None  # fields whose equal values are worth one object (None: all)
    compiled: int | None  # PolicyVersion._compiled: left behind


def _shapes() -> tuple[_Shape, ...]:
    """Every frozen, slotted dataclass of the core's state and events a builder can make."""
    shapes = []
    for module in (ledger.core.events, ledger.core.state, ledger.core.authority):
        for value in vars(module).values():
            if not (isinstance(value, type) and dataclasses.is_dataclass(value)):
                continue
            if "__reduce__" in vars(value):  # the class says how it pickles (Grant): its way
                shapes.append(_Shape(cls=value, values=_own_reduce, shared=None, compiled=None))
                continue
            try:
                builder(value)
            except TypeError:  # not one a builder can make: pickled the default way
                continue
            names = field_names(value)
            get = operator.attrgetter(*names)
            shared = tuple(
                i for i, n in enumerate(names) if not n.endswith("_id") and n not in _OWN_TEXT
            )
            shapes.append(
                _Shape(
                    cls=value,
                    values=get if len(names) > 1 else _as_tuple(get),
                    shared=shared,
                    compiled=names.index("_compiled") if "_compiled" in names else None,
                )
            )
    return tuple(shapes)


def _own_reduce(obj: Any) -> tuple[Any, ...]:
    """The class's own ``__reduce__``: (how to rebuild it, from what)."""
    return obj.__reduce__()  # type: ignore[no-any-return]


def _as_tuple(get: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    """An attrgetter of one name gives the value, not a tuple of one."""
    return lambda obj: (get(obj),)


_SHAPES: Final = _shapes()


def _dispatch_table(seen: dict[Any, Any]) -> dict[type, Callable[[Any], Any]]:
    """How one snapshot pickles the core's records: each as its field values, rebuilt by
    :func:`_rebuilt` through the slots, and equal text (an actor, a principal, a resource, a
    tuple of actions) as one object, the first ``seen``.

    Pickle's default for a frozen, slotted dataclass calls ``dataclasses.fields`` and
    ``object.__setattr__`` per field in Python: three quarters of loading a million events'
    state (2.6 s → 1.9 s). Records decoded from Kafka each hold their own copy of every
    string; written once and referred to after, the file of a million events' state is 13 %
    smaller and loads a quarter faster, and the loaded state shares them. A version's compiled
    form stays behind (``PolicyVersion.__getstate__`` says so too)."""
    share = seen.setdefault
    left_behind = ledger.core.state._NOT_LOADED

    def shared(kept: list[Any], indices: Iterable[int]) -> None:
        for i in indices:
            value = kept[i]
            if type(value) is str or type(value) is tuple:
                try:  # noqa: SIM105 (suppress() costs a call per value here)
                    kept[i] = share(value, value)
                except TypeError:  # a tuple holding something unhashable: as it is
                    pass

    def reducer(shape: _Shape) -> Callable[[Any], tuple[Any, ...]]:
        cls, values, indices, compiled = shape.cls, shape.values, shape.shared, shape.compiled
        if indices is None:  # the class's own reduce: its arguments shared

            def own(obj: Any) -> tuple[Any, ...]:
                rebuild, args = values(obj)
                kept = list(args)
                shared(kept, range(len(kept)))
                return (rebuild, tuple(kept))

            return own

        def reduce(obj: Any) -> tuple[Any, ...]:
            kept = list(values(obj))
            shared(kept, indices)
            if compiled is not None:
                kept[compiled] = left_behind
            return (_rebuilt, (cls, *kept))

        return reduce

    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)  # (re.Pattern's)
    table.update((shape.cls, reducer(shape)) for shape in _SHAPES)
    return table


class _Digesting:
    """A file that hashes what is written through it (the snapshot's trailer is the digest)."""

    def __init__(self, out: Any) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return int(self.out.write(data))


def record_digest(value: bytes | None) -> str:
    """The digest a snapshot keeps of a record's value (hex SHA-256)."""
    return hashlib.sha256(value or b"").hexdigest()


@cache
def code_fingerprint() -> str:
    """SHA-256 over what decides the state a history folds into and how it is written: the
    core's source, the codec, the Avro schemas, this module, and the package version."""
    package = Path(ledger.__file__).parent
    files = sorted(
        [p for p in (package / "core").iterdir() if p.suffix in (".py", ".pyx")]
        + [package / name for name in ("codec.py", "avro.py", "_avrovm.pyx", "kafka/snapshots.py")]
        + list(contract_dir("schemas").rglob("*.avsc")),
    )
    digest = hashlib.sha256(ledger.__version__.encode())
    for path in files:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def write_snapshot(
    path: Path, state: LedgerState, tails: Mapping[str, tuple[int, str]], *, events: int
) -> int:
    """Write ``state`` (positions, policies, principals) to ``path``, replacing any snapshot
    there atomically, and return the file's size. ``tails`` must name every key of
    ``state.position`` with the same offset.

    Only the records are kept: a version's compiled form and the state's derived caches are
    rebuilt on first use after loading.
    """
    position = dict(state.position)
    if {key: offset for key, (offset, _) in tails.items()} != position:
        raise ValueError("a snapshot's tails must be the state's positions")
    header = {
        "code": code_fingerprint(),
        "events": events,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tails": {key: [offset, digest] for key, (offset, digest) in sorted(tails.items())},
    }
    with replacing_private(path) as out:
        out.write(MAGIC)
        body = _Digesting(out)  # streamed: the state is never held twice, as bytes too
        body.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        pickler = pickle.Pickler(body, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = _dispatch_table({})
        pickler.dump((state.policies, state.principals))
        out.write(body.sha256.hexdigest().encode())
    return len(MAGIC) + body.size + DIGEST_BYTES


def read_snapshot(path: Path) -> Snapshot:
    """The snapshot at ``path``: :class:`FileNotFoundError` when there is none,
    :class:`SnapshotUnusable` (saying why) when it is damaged or from other code. Its records
    are unpickled only after the file's digest matches."""
    with path.open("rb") as data:
        if data.readline(len(MAGIC) + 1) != MAGIC:
            raise SnapshotUnusable("not a governance snapshot of this format")
        body = memoryview(data.read())  # slices of it are not copies
    signed, trailer = body[:-DIGEST_BYTES], bytes(body[-DIGEST_BYTES:])
    if len(body) <= DIGEST_BYTES or hashlib.sha256(signed).hexdigest().encode() != trailer:
        raise SnapshotUnusable("its contents do not match their digest (damaged or cut short)")
    end = bytes(signed[: 1 << 20]).find(b"\n")  # the header names a few partitions
    line, payload = bytes(signed[: max(end, 0)]), signed[end + 1 :]
    try:
        header = json.loads(line)
        code = header["code"]
        tails = {str(k): (int(o), str(d)) for k, (o, d) in dict(header["tails"]).items()}
        events, written_at = int(header["events"]), str(header["written_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotUnusable(f"its header does not read ({exc})") from None
    if code != code_fingerprint():
        raise SnapshotUnusable("it was written by other code (an upgrade, or a different build)")
    try:
        policies, principals = pickle.loads(payload)
    except Exception as exc:  # digest matched: written by this code, so this is a bug
        raise SnapshotUnusable(f"its contents do not load ({type(exc).__name__}: {exc})") from None
    position = MappingProxyType({key: offset for key, (offset, _) in tails.items()})
    state = LedgerState(policies=policies, principals=principals, position=position)
    return Snapshot(state=state, tails=tails, events=events, written_at=written_at)

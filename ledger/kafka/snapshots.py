"""Governance snapshots: a processor's caught-up state on its own disk, so its next start reads
the events after it instead of the whole history.

A snapshot is one file: a first line naming the format, a JSON header line, the state's policy
and principal records pickled, and a digest. What a start checks before the state is used:

- ``code``: a fingerprint of the code and schemas that built the state
  (:func:`fingerprinted_files`, the package's and Python's versions). A state folded by other
  rules is not this code's state: after an upgrade the history is replayed once, and a new
  snapshot written.
- a trailer, the HMAC-SHA-256 of the header and the pickled records under a key derived from
  the processor's Kafka password (:func:`snapshot_key`; plain SHA-256 without one), checked
  before they are unpickled: a torn or damaged file is never loaded, and one rewritten by
  whoever may write the state directory but not read the role's credential is refused;
- ``tails``: for each governance partition, the offset of the last record folded into the state
  and the SHA-256 of that record's value. The follower reads that one record back from Kafka
  and compares (:class:`~ledger.kafka.governance.GovernanceFollower`): a snapshot of another
  cluster, of topics deleted and re-created, or of a log since truncated is not used.

A processor that must remember something of every event besides the state (the command
processor: which events each command appended, to answer a command sent again) keeps that in
the snapshot too, as its :class:`SnapshotMemory` saves it: plain data (dictionaries, lists,
tuples, text, bytes, numbers, ``None``), named in the header by its kind; the module of the
class that saved it joins the fingerprint. A snapshot is only used with the kind of memory it
was written with (none for an evaluator).

Any check that fails means a full replay, logged; never a partial or foreign state. Deleting
the file is always safe. The file is written 0600 under the processor's own state directory and
replaced atomically. It is named by the code's fingerprint (:func:`snapshot_file`): processors
of two releases on one machine keep one each, rather than replacing each other's and so
replaying the whole history at every start; one of other code not written for
:data:`OTHER_CODE_KEPT` is removed (:func:`remove_other_snapshots`). Its pickle loads only the
state's own classes (:class:`_StateUnpickler`), and is still only as trustworthy as that
directory, which must be as private as the installation itself (whoever can write there can
also change the code).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import io
import json
import operator
import os
import pickle
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

import ledger
import ledger.core.authority
import ledger.core.events
import ledger.core.state
from ledger.contract import contract_dir
from ledger.core.builders import builder, field_names
from ledger.core.events import GovernanceEvent
from ledger.core.pmap import PMap
from ledger.core.state import HeldPrincipals, LedgerState
from ledger.errors import SnapshotUnusable
from ledger.files import remove_abandoned, replacing_private
from ledger.settings import KafkaSecurity

__all__ = [
    "Snapshot",
    "SnapshotMemory",
    "SnapshotUnusable",
    "code_fingerprint",
    "fingerprinted_files",
    "installed_files",
    "installed_fingerprint",
    "read_snapshot",
    "record_digest",
    "remove_other_snapshots",
    "snapshot_file",
    "snapshot_fingerprint",
    "snapshot_key",
    "snapshot_lock",
    "write_snapshot",
]

MAGIC = b"ledger governance snapshot 2\n"
"""The first line of every snapshot file (the format's version is its last word)."""

DIGEST_BYTES = 64
"""The trailer: SHA-256 (hex) of everything between the first line and itself."""

_SHA256_HEX: Final = re.compile("[0-9a-f]{64}")

OTHER_CODE_KEPT = 86_400.0
"""Seconds a snapshot of other code is kept beside a processor's own once not written for as
long. Processors of another release that run here fold the same governance events and write
theirs about when this one does; one not written for a day is most likely of a release no longer
run. Removing one that is still of use costs its processor one full replay, nothing else."""

_OWN_FILES: Final = "governance*.snapshot"
"""The snapshot files of a state directory, of any code (and the one name before fingerprints)."""

_TAKE: Final = object()
"""``write_snapshot`` takes what the memory saves itself."""


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
    memory: Any = None
    """What the processor's :class:`SnapshotMemory` saved (``None`` without one)."""


class SnapshotMemory(Protocol):
    """What a processor remembers of every governance event besides the state, kept in its
    snapshot with the state: ``remember`` is called with every event folded (the follower's
    listener), ``saved`` returns it all as plain data (no other class: the snapshot's unpickler
    loads none) that remembering more later does not change (it is written on another thread
    while the processor goes on), and ``restore`` takes back what ``saved`` returned, raising :class:`ValueError`
    for anything else and then leaving the memory as it was. ``memory_kind`` names what it
    saves (a snapshot is only used with the kind it was written with)."""

    @property
    def memory_kind(self) -> str: ...

    def remember(self, event: GovernanceEvent) -> None: ...

    def saved(self) -> Any: ...

    def restore(self, saved: Any) -> None: ...


def memory_kind(memory: SnapshotMemory | None) -> str | None:
    """How a snapshot's header names the memory it holds (``None``: none)."""
    return None if memory is None else str(memory.memory_kind)


def _memory_source(memory: SnapshotMemory | None) -> tuple[Path, ...]:
    """The file that decides what ``memory`` saves: fingerprinted with the rest."""
    if memory is None:
        return ()
    found = inspect.getsourcefile(type(memory))
    return (Path(found),) if found else ()


def snapshot_fingerprint(memory: SnapshotMemory | None = None) -> str:
    """The code fingerprint of a snapshot with ``memory`` (:func:`code_fingerprint` of the
    files that decide the state, and the memory's module). Read once per process and kept: a
    process that calls this when it starts stamps what it writes later with the code it runs,
    even if the files were replaced since (an upgrade installed before a restart)."""
    return code_fingerprint(*_memory_source(memory))


def snapshot_file(folder: Path, memory: SnapshotMemory | None = None) -> Path:
    """Where a processor with ``memory`` keeps its snapshot in its state directory ``folder``:
    a file named by its code's fingerprint (:func:`snapshot_fingerprint`), so that processors of
    two releases on one machine each keep their own."""
    return folder / f"governance-{snapshot_fingerprint(memory)[:16]}.snapshot"


def snapshot_lock(path: Path) -> Path:
    """The lock file beside snapshot ``path``: held by the one worker writing it."""
    return path.with_name(f".{path.name}.lock")


def remove_other_snapshots(
    path: Path, *, now: float, older_than: float = OTHER_CODE_KEPT
) -> list[Path]:
    """Remove the snapshots beside ``path`` (of other code: :func:`snapshot_file`) not written
    for ``older_than`` seconds at ``now`` (Unix time), with their locks; return those removed.
    One of a release no longer run would otherwise stay for good, as large as the state."""
    removed = []
    for other in sorted(path.parent.glob(_OWN_FILES)):
        try:
            if other == path or now - other.stat().st_mtime < older_than:
                continue
            other.unlink()
            snapshot_lock(other).unlink(missing_ok=True)
        except OSError:  # removed meanwhile by a worker of the same code, or not ours to remove
            continue
        removed.append(other)
    # A write cut short (`ledger down` mid-write) leaves its partial file, as large as the state;
    # a writer of the same code removes it, but none will after an upgrade.
    return removed + remove_abandoned(path.parent, _OWN_FILES)


def _rebuilt(cls: type, *values: Any) -> Any:
    """An instance of the frozen, slotted dataclass ``cls`` from its field values (how a
    snapshot's records are unpickled: see :func:`_dispatch_table`)."""
    return builder(cls)(*values)


_HELD: Final[tuple[type, ...]] = (
    ledger.core.state.PolicyRecord,
    ledger.core.state.PolicyVersion,
    ledger.core.state.PrincipalRecord,
    ledger.core.state.ActorKey,
    ledger.core.events.GrantIssued,  # a grant held as the event that issued it, until read
    ledger.core.authority.Grant,
)
"""The records a state holds, by the hundred thousand: pickled the fast way
(:func:`_dispatch_table`). Anything else in a state is pickled the default way."""

_OWN_TEXT: Final = frozenset({"document", "content_hash", "signed_command", "note"})
"""Text fields each record has its own of (as are the ``*_id`` fields): not worth sharing."""


_NOT_KEPT: Final[Mapping[type, frozenset[str]]] = {
    ledger.core.events.GrantIssued: frozenset(
        {"command_key_id", "command_signature", "signed_command"}
    ),
}
"""Fields written as ``None``: a grant held as the event that issued it is only ever built into
the state's grant (:func:`~ledger.core.authority.grant_from_event`), which reads nothing of
the command's proof (the log keeps it, for ``actor verify``). In a ledger of signed commands
the proofs were two thirds of the file."""


def _values_of(cls: type) -> Callable[[Any], Sequence[Any]]:
    """How a snapshot reads the field values of a ``cls`` to write: the class's own
    ``__getstate__`` if it has one (a policy version leaves its compiled form behind), else
    every field."""
    if "__getstate__" in vars(cls):
        return cls.__getstate__  # type: ignore[return-value]  # an unbound __getstate__ is a function of the instance
    get = operator.attrgetter(*field_names(cls))
    return get if len(field_names(cls)) > 1 else (lambda obj: (get(obj),))


def _dispatch_table(seen: dict[Any, Any]) -> dict[type, Callable[[Any], Any]]:
    """How one snapshot pickles the records of :data:`_HELD`: each as its field values,
    rebuilt by :func:`_rebuilt` through the slots (or the class's own ``__reduce__``, a built
    grant's), and equal text (an actor, a principal, a resource, a tuple of actions) as one
    object, the first ``seen``.

    Pickle's default for a frozen, slotted dataclass calls ``dataclasses.fields`` and
    ``object.__setattr__`` per field in Python: three quarters of loading a million events'
    state (2.6 s → 1.9 s). Records decoded from Kafka each hold their own copy of every
    string; written once and referred to after, the file of a million events' state is 13 %
    smaller and loads a quarter faster, and the loaded state shares them. Only strings and
    tuples of strings are shared: for them, equal is the same."""
    share = seen.setdefault

    def shared(kept: list[Any], indices: Iterable[int]) -> None:
        for i in indices:
            value = kept[i]
            kind = type(value)
            if kind is str or (kind is tuple and all(type(v) is str for v in value)):
                kept[i] = share(value, value)

    def reducer(cls: type) -> Callable[[Any], tuple[Any, ...]]:
        if "__reduce__" in vars(cls):  # the class says how it pickles; its arguments shared

            def own(obj: Any) -> tuple[Any, ...]:
                rebuild, args = obj.__reduce__()
                kept = list(args)
                shared(kept, range(len(kept)))
                return (rebuild, tuple(kept))

            return own
        values = _values_of(cls)
        names = field_names(cls)
        indices = [i for i, n in enumerate(names) if not n.endswith("_id") and n not in _OWN_TEXT]
        blank = [i for i, n in enumerate(names) if n in _NOT_KEPT.get(cls, ())]

        def reduce(obj: Any) -> tuple[Any, ...]:
            kept = list(values(obj))
            shared(kept, indices)
            for i in blank:
                kept[i] = None
            return (_rebuilt, (cls, *kept))

        return reduce

    return {cls: reducer(cls) for cls in _HELD}


_CORE_MODULES: Final = frozenset(
    {"ledger.core.state", "ledger.core.events", "ledger.core.authority", "ledger.core.pmap"}
)
_STANDARD: Final = frozenset(
    {
        ("datetime", "datetime"),
        ("datetime", "date"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("ledger.kafka.snapshots", "_rebuilt"),
    }
)


class _StateUnpickler(pickle.Unpickler):
    """Loads a state and nothing else: the classes and functions the core defines in its state,
    event, grant and map modules, the few of the standard library a state holds (dates), and
    :func:`_rebuilt`. A pickle naming anything else (``os.system``, a name reached through
    another module) is refused, even one whose digest matched."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STANDARD or (module in _CORE_MODULES and "." not in name):
            found = super().find_class(module, name)
            if (module, name) in _STANDARD or getattr(found, "__module__", None) == module:
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a governance state")


class _Digesting:
    """A file that hashes what is written through it (the snapshot's trailer is the digest)."""

    def __init__(self, out: Any, key: bytes | None) -> None:
        self.out, self.sha256, self.size = out, _sealer(key), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return int(self.out.write(data))


def snapshot_key(security: KafkaSecurity | None) -> bytes | None:
    """The key a processor seals its snapshots with: derived from its role's Kafka password,
    which lives outside its state directory (``None`` without one: an insecure broker, or a
    certificate). A new password makes the old snapshot unusable: one full replay."""
    if security is None or not security.password:
        return None
    return hashlib.sha256(
        b"ledger governance snapshot seal\0" + security.password.encode()
    ).digest()


def _sealer(key: bytes | None) -> Any:
    return hmac.new(key, digestmod="sha256") if key is not None else hashlib.sha256()


def record_digest(value: bytes | None) -> str:
    """The digest a snapshot keeps of a record's value (hex SHA-256)."""
    return hashlib.sha256(value or b"").hexdigest()


def fingerprinted_files() -> list[Path]:
    """What decides the state a history folds into and how a snapshot holds it: the core
    (every module, its C sources and builds), the codec, the follower's decoding and reading,
    this module, and the Avro schemas."""
    package = Path(ledger.__file__).parent
    code = (".py", ".pyx", ".so")
    files = [p for p in (package / "core").rglob("*") if p.suffix in code]
    files += [p for p in package.glob("_avrovm*") if p.suffix in code]
    names = ("codec.py", "avro.py", "kafka/governance.py", "kafka/reading.py", "kafka/snapshots.py")
    files += [package / name for name in names]
    files += contract_dir("schemas").rglob("*.avsc")
    return sorted(p for p in files if "__pycache__" not in p.parts)


FOLD_LIBRARIES: Final = ("PyYAML", "cel-python", "lark", "google-re2", "cryptography", "fastavro")
"""The libraries the fold's result depends on (the core's own, and the codec's): reading a
policy document, compiling its conditions, proving keys, decoding records. Their versions are
fingerprinted with the code: an upgrade of one may fold the same history otherwise (a
maintainability review: a PyYAML upgrade reused the snapshots of the old one)."""


def _library_versions() -> str:
    found = []
    for name in FOLD_LIBRARIES:
        try:
            found.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    return " ".join(found)


@cache
def code_fingerprint(*also: Path) -> str:
    """SHA-256 over :func:`fingerprinted_files` and ``also`` (each named by its path in the
    project), the package's version, Python's and those of :data:`FOLD_LIBRARIES`."""
    package = Path(ledger.__file__).parent.parent
    digest = hashlib.sha256(
        f"{ledger.__version__} {sys.version_info[:2]} {_library_versions()}".encode()
    )
    for path in [*fingerprinted_files(), *also]:
        name = path.relative_to(package) if path.is_relative_to(package) else path.name
        digest.update(f"{name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def installed_files() -> list[Path]:
    """Everything installed that decides what a process of the ledger does: every module of
    the ``ledger`` and ``processors`` packages (their C sources and builds too) and the
    contract files (schemas, queries). :func:`fingerprinted_files` is a part of it."""
    package = Path(ledger.__file__).parent
    code = (".py", ".pyx", ".so")
    roots = [package, package.parent / "processors"]  # installed side by side
    files = {p for root in roots for p in root.rglob("*") if p.suffix in code}
    files |= {p for name in ("schemas", "queries") for p in contract_dir(name).rglob("*")}
    return sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts)


@cache
def installed_fingerprint() -> str:
    """The :func:`code_fingerprint` of :func:`installed_files`: what tells two builds apart
    (``ledger --version``), and which code a processor runs (its heartbeat carries the one
    read when it started, ``ledger ps`` compares it with its own). Read once per process and
    kept, like :func:`snapshot_fingerprint`, but wider: a change to the processors or the CLI
    alone is other code to run, not another state to fold."""
    covered = set(fingerprinted_files())
    return code_fingerprint(*(p for p in installed_files() if p not in covered))


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in words (an operator's walkthrough: a
    folder there was called "a FIFO, a device or a socket")."""
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return kind
    return "something else"


def write_snapshot(
    path: Path,
    state: LedgerState,
    tails: Mapping[str, tuple[int, str]],
    *,
    events: int,
    memory: SnapshotMemory | None = None,
    saved: Any = _TAKE,
    key: bytes | None = None,
) -> int:
    """Write ``state`` (positions, policies, principals) and what ``memory`` saves to
    ``path``, replacing any snapshot there atomically, and return the file's size. ``tails``
    must name every key of ``state.position`` with the same offset, and ``memory`` remember
    the same events as the state: ``saved``, when the caller took what it saves already (on
    the thread that changes it, writing on another), else taken here.

    Only the records are kept: a version's compiled form and the state's derived caches are
    rebuilt on first use after loading.
    """
    position = dict(state.position)
    if not position or {key: offset for key, (offset, _) in tails.items()} != position:
        raise ValueError("a snapshot's tails must be the state's positions, and it must have one")
    header = {
        "code": snapshot_fingerprint(memory),
        "memory": memory_kind(memory),
        "events": events,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tails": {key: [offset, digest] for key, (offset, digest) in sorted(tails.items())},
    }
    with replacing_private(path) as out:
        out.write(MAGIC)
        body = _Digesting(out, key)  # streamed: the state is never held twice, as bytes too
        body.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        pickler = pickle.Pickler(body, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = _dispatch_table({})
        if memory is None:
            saved = None
        elif saved is _TAKE:
            saved = memory.saved()
        pickler.dump((state.policies, state.principals, saved))
        out.write(body.sha256.hexdigest().encode())
    return len(MAGIC) + body.size + DIGEST_BYTES


def read_snapshot(
    path: Path, *, memory: SnapshotMemory | None = None, key: bytes | None = None
) -> Snapshot:
    """The snapshot at ``path``: :class:`FileNotFoundError` when there is none,
    :class:`SnapshotUnusable` (saying why) when it is damaged, from other code, or holds
    another memory than ``memory``'s kind (see :func:`memory_kind`; none without one). Its
    records are unpickled only after the file's digest matches. What the memory saved is
    returned, not restored: that is the caller's, once the log vouches for the snapshot."""
    # Opened without blocking, then refused unless a regular file: a FIFO at the path held a
    # processor's start for good, with no log line (an operator's check).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise SnapshotUnusable(f"it is not a regular file but {_file_kind(mode)}")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as data:
        if data.readline(len(MAGIC) + 1) != MAGIC:
            raise SnapshotUnusable("not a governance snapshot of this format")
        body = memoryview(data.read())  # slices of it are not copies
    signed, trailer = body[:-DIGEST_BYTES], bytes(body[-DIGEST_BYTES:])
    sealer = _sealer(key)
    sealer.update(signed)
    if len(body) <= DIGEST_BYTES or not hmac.compare_digest(sealer.hexdigest().encode(), trailer):
        raise SnapshotUnusable(
            "its contents do not match their digest (damaged or cut short, sealed under "
            "another password, or rewritten)"
            if key is not None
            else "its contents do not match their digest (damaged or cut short)"
        )
    end = bytes(signed[: 1 << 20]).find(b"\n")  # the header names a few partitions
    line, payload = bytes(signed[: max(end, 0)]), signed[end + 1 :]
    try:
        header = json.loads(line)
        code = header["code"]
        tails = {str(k): (int(o), str(d)) for k, (o, d) in dict(header["tails"]).items()}
        events, written_at = int(header["events"]), str(header["written_at"])
        kind = header["memory"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotUnusable(f"its header does not read ({exc})") from None
    if not tails or any(o < 0 or not _SHA256_HEX.fullmatch(d) for o, d in tails.values()):
        raise SnapshotUnusable(
            "its header names no partition, or an offset or digest that is not one"
        )
    if kind != memory_kind(memory):
        raise SnapshotUnusable(
            f"it holds {kind or 'no memory'} where this processor keeps "
            f"{memory_kind(memory) or 'none'} (another processor's snapshot?)"
        )
    if code != snapshot_fingerprint(memory):
        raise SnapshotUnusable("it was written by other code (an upgrade, or a different build)")
    try:
        policies, principals, saved = _StateUnpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # digest matched: written by this code, so this is a bug
        raise SnapshotUnusable(f"its contents do not load ({type(exc).__name__}: {exc})") from None
    if type(policies) is not PMap or type(principals) is not HeldPrincipals:
        raise SnapshotUnusable("its contents are not a state's policies and principals")
    position = MappingProxyType({key: offset for key, (offset, _) in tails.items()})
    state = LedgerState(policies=policies, principals=principals, position=position)
    return Snapshot(state=state, tails=tails, events=events, written_at=written_at, memory=saved)

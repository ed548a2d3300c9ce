"""Governance snapshots on disk (ledger.kafka.snapshots): what is written is what is read back,
and a file that is damaged, from other code, or not a snapshot is refused before it is loaded.
Starting a follower from one, checked against the log, is tested on the broker
(tests/integration/test_governance_snapshot.py)."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
from pathlib import Path

import pytest

import ledger.kafka.snapshots as snapshots
from benchmarks.replay import generate
from ledger.core.history import state_at
from ledger.core.state import _NOT_LOADED, LedgerState, compile_deployed
from ledger.kafka.snapshots import SnapshotUnusable, read_snapshot, record_digest, write_snapshot

HISTORY = generate(3_000, policies=6, principals=150, roles=10)


def _state() -> LedgerState:
    state = state_at(HISTORY)
    compile_deployed(state, list(state.policies))  # as an evaluator's follower holds it
    return state


def _tails(state: LedgerState) -> dict[str, tuple[int, str]]:
    return {key: (offset, record_digest(key.encode())) for key, offset in state.position.items()}


def test_a_snapshot_reads_back_as_the_state_it_was_written_from(tmp_path: Path) -> None:
    state = _state()
    assert any(
        v._compiled is not _NOT_LOADED for r in state.policies.values() for v in r.versions.values()
    )
    path = tmp_path / "evaluator" / "governance.snapshot"
    size = write_snapshot(path, state, _tails(state), events=len(HISTORY))
    assert path.stat().st_size == size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p.name for p in path.parent.iterdir() if p != path]  # no partial file left over
    back = read_snapshot(path)
    assert back.events == len(HISTORY) and back.tails == _tails(state)
    assert back.state == state and dict(back.state.position) == dict(state.position)
    assigners = {n: dict(r.role_assigned_by) for n, r in state.principals.items()}
    assert any(assigners.values())  # who assigned each role membership comes back too
    assert {n: dict(r.role_assigned_by) for n, r in back.state.principals.items()} == assigners
    revoked = {n: dict(r.revoked_grants) for n, r in state.principals.items()}
    assert any(revoked.values())  # so do the ids of revoked grants, never issued again
    assert {n: dict(r.revoked_grants) for n, r in back.state.principals.items()} == revoked
    # The compiled forms stay behind (recompiled on first read), and read the same.
    versions = [v for r in back.state.policies.values() for v in r.versions.values()]
    assert versions and all(v._compiled is _NOT_LOADED for v in versions)
    name = next(n for n, r in state.policies.items() if r.active is not None)
    active = back.state.policies[name].active
    assert (
        back.state.policies[name].versions[active].compiled
        == state.policies[name].versions[active].compiled
    )
    # A second write replaces the first whole.
    write_snapshot(path, state_at(HISTORY[:100]), _tails(state_at(HISTORY[:100])), events=100)
    assert read_snapshot(path).events == 100


def test_a_signed_ledgers_state_and_memory_of_commands_read_back_whole(tmp_path: Path) -> None:
    # Every record of a ledger of signed commands carries the command's proof (bytes and text):
    # the state holds some of it (grants kept as the events that issued them), and the command
    # processor's memory a signature per command.
    from ledger.core.events import GrantIssued
    from processors.command_handler import AppliedCommands

    signed = generate(3_000, policies=6, principals=150, roles=10, signed=True)
    state = state_at(signed)
    memory = AppliedCommands()
    for entry in signed:
        memory.remember(entry.event)
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=len(signed), memory=memory)
    restored = AppliedCommands()
    back = read_snapshot(path, memory=restored)
    restored.restore(back.memory)
    # The grants held as their events (until read: reading builds them) are written without
    # the proofs, which were most of the file: never read from the state, a grant is built
    # from the rest. Looked at before anything reads them.
    held = [
        g
        for r in back.state.principals.values()
        for _, g in r.grants.stored_items()  # type: ignore[attr-defined]
        if isinstance(g, GrantIssued)
    ]
    assert held and all(g.signed_command is g.command_signature is None for g in held)
    assert back.state == state and restored.saved() == memory.saved()
    sizes = []
    for history in (signed, generate(3_000, policies=6, principals=150, roles=10)):
        alone = state_at(history)
        sizes.append(write_snapshot(tmp_path / "s", alone, _tails(alone), events=len(history)))
    assert sizes[0] < 1.2 * sizes[1], sizes
    command = signed[-1].event
    assert restored.signature(command.command_id) == command.command_signature
    assert restored.event_ids(command.command_id) == (command.event_id,)


def test_a_write_removes_what_dead_writers_left_and_leaves_live_ones_alone(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    state = _state()
    path = tmp_path / "governance.snapshot"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = tmp_path / f".governance.snapshot.{done.stdout.strip()}.x1y2.partial"
    live = tmp_path / f".governance.snapshot.{os.getppid()}.a3b4.partial"  # our parent: alive
    other = tmp_path / ".governance.snapshot.notapid.partial"
    for leftover in (dead, live, other):
        leftover.write_bytes(b"half a snapshot")
    write_snapshot(path, state, _tails(state), events=1)
    assert not dead.exists() and live.exists() and other.exists()
    assert read_snapshot(path).events == 1


def test_the_tails_must_be_the_states_positions(tmp_path: Path) -> None:
    state = _state()
    wrong = {key: (offset - 1, digest) for key, (offset, digest) in _tails(state).items()}
    with pytest.raises(ValueError, match="tails"):
        write_snapshot(tmp_path / "s", state, wrong, events=1)
    assert not (tmp_path / "s").exists()


def _edit(path: Path, edit_header: object = None, edit_payload: object = None) -> None:
    """Change a snapshot's header or records, and sign the result again (a digest that matches:
    what is left to catch the change is what reads the header)."""
    import hashlib

    data = path.read_bytes()
    magic, header, rest = data.split(b"\n", 2)
    payload = rest[: -snapshots.DIGEST_BYTES]
    fields = json.loads(header)
    if edit_header is not None:
        edit_header(fields)  # type: ignore[operator]
    if edit_payload is not None:
        payload = edit_payload(payload)  # type: ignore[operator]
    signed = json.dumps(fields).encode() + b"\n" + payload
    path.write_bytes(magic + b"\n" + signed + hashlib.sha256(signed).hexdigest().encode())


def _every_tail(change: object) -> object:
    def edit(header: dict[str, object]) -> None:
        tails = header["tails"]
        assert isinstance(tails, dict)
        header["tails"] = {key: change(tail) for key, tail in tails.items()}  # type: ignore[operator]

    return edit


def _damage(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: _damage(p, -100), "digest"),  # in the records
        (lambda p: _damage(p, 60), "digest"),  # in the header
        (lambda p: _damage(p, -1), "digest"),  # in the digest
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "digest"),
        (lambda p: p.write_bytes(p.read_bytes().split(b"\n", 1)[0] + b"\n"), "digest"),
        (lambda p: _edit(p, edit_header=lambda h: h.update(code="0" * 64)), "other code"),
        (lambda p: _edit(p, edit_header=lambda h: h.pop("tails")), "header"),
        (lambda p: _edit(p, edit_header=lambda h: h.update(tails={})), "names no partition"),
        (lambda p: _edit(p, edit_header=_every_tail(lambda t: [-1, t[1]])), "an offset or digest"),
        (lambda p: _edit(p, edit_header=_every_tail(lambda t: [t[0], "xyz"])), "an offset or"),
        (lambda p: _edit(p, edit_payload=lambda b: b"not a pickle"), "do not load"),
        (
            lambda p: _edit(p, edit_payload=lambda b: pickle.dumps(("a", "b", None))),
            "not a state's",
        ),
        (
            lambda p: p.write_bytes(b"ledger governance snapshot 0\n{}\n"),
            "not a governance snapshot",
        ),
        (lambda p: p.write_bytes(b""), "not a governance snapshot"),
        # An operator's check: a FIFO there held the processor's start for good.
        (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file but a FIFO"),
        # An operator's walkthrough: a folder there was "a FIFO, a device or a socket".
        (lambda p: (p.unlink(), p.mkdir()), "not a regular file but a folder"),
    ],
)
def test_a_damaged_or_foreign_snapshot_is_refused_saying_why(
    tmp_path: Path, damage: object, reason: str
) -> None:
    state = _state()
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=len(HISTORY))
    damage(path)  # type: ignore[operator]
    with pytest.raises(SnapshotUnusable, match=reason):
        read_snapshot(path)


def test_records_are_not_unpickled_before_the_digest_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state()
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=1)
    loaded: list[object] = []

    class Recording(snapshots._StateUnpickler):
        def load(self) -> object:
            loaded.append(self)
            return super().load()

    monkeypatch.setattr(snapshots, "_StateUnpickler", Recording)
    assert read_snapshot(path).events == 1 and len(loaded) == 1  # (it is the one that loads)
    _damage(path, -100)
    with pytest.raises(SnapshotUnusable, match="digest"):
        read_snapshot(path)
    assert len(loaded) == 1


def test_the_code_fingerprint_covers_the_core_the_follower_and_the_schemas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(snapshots.ledger.__file__).parent
    covered = set(snapshots.fingerprinted_files())
    for module in (root / "core").rglob("*.py"):  # ledger/core/policy/ too
        assert module in covered, module
    for name in ("codec.py", "kafka/governance.py", "kafka/reading.py", "kafka/snapshots.py"):
        assert root / name in covered
    assert any(p.suffix == ".avsc" and p.stem == "GrantIssued" for p in covered)
    # Every byte of every file counts, and the version.
    source = tmp_path / "state.py"
    source.write_text("one rule")
    monkeypatch.setattr(snapshots, "fingerprinted_files", lambda: [source])
    prints = []
    real_version = snapshots.metadata.version
    for change in (None, "another rule", "version", "PyYAML"):
        if change == "version":
            monkeypatch.setattr(snapshots.ledger, "__version__", "0.0.0-other")
        elif change == "PyYAML":  # a library the fold depends on, upgraded
            monkeypatch.setattr(
                snapshots.metadata,
                "version",
                lambda name: "99.0" if name == "PyYAML" else real_version(name),
            )
        elif change is not None:
            source.write_text(change)
        snapshots.code_fingerprint.cache_clear()
        prints.append(snapshots.code_fingerprint())
    snapshots.code_fingerprint.cache_clear()
    assert len(set(prints)) == 4


def test_the_installed_fingerprint_covers_all_the_code_and_the_snapshots_only_the_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a processor runs (its heartbeat says, `ledger --version` prints) is every module:
    # a fix to the processors or the CLI alone is other code to run, not another state to fold.
    root = Path(snapshots.ledger.__file__).parent
    installed = set(snapshots.installed_files())
    assert set(snapshots.fingerprinted_files()) <= installed
    for name in ("processors/request_handler.py", "ledger/cli/stack.py", "ledger/client.py"):
        assert root.parent / name in installed, name
    assert any(p.name == "views.sql" for p in installed)
    real = snapshots.installed_fingerprint()
    assert real == snapshots.installed_fingerprint() != snapshots.code_fingerprint()
    patched = tmp_path / "request_handler.py"
    patched.write_text("a fix")
    files = snapshots.installed_files()
    monkeypatch.setattr(snapshots, "installed_files", lambda: [*files, patched])
    state_code = snapshots.code_fingerprint()
    snapshots.installed_fingerprint.cache_clear()
    try:
        assert snapshots.installed_fingerprint() != real
        assert snapshots.code_fingerprint() == state_code  # snapshots are still of use
    finally:
        snapshots.installed_fingerprint.cache_clear()


def test_a_follower_stamps_its_snapshots_with_the_code_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A running processor writes snapshots long after it started: by then an upgrade may have
    # replaced the files on disk, which are not the code it runs.
    from ledger.kafka.governance import GovernanceFollower
    from ledger.settings import TopicNames

    source = tmp_path / "state.py"
    source.write_text("the rules it runs")
    monkeypatch.setattr(snapshots, "fingerprinted_files", lambda: [source])
    snapshots.code_fingerprint.cache_clear()
    try:
        GovernanceFollower(bootstrap="127.0.0.1:1", topics=TopicNames(), snapshot=tmp_path / "s")
        source.write_text("the rules an upgrade installed")
        state = _state()
        write_snapshot(tmp_path / "s", state, _tails(state), events=1)
        header = json.loads((tmp_path / "s").read_bytes().split(b"\n")[1])
        prints = []
        for text in ("the rules it runs", "the rules an upgrade installed"):
            source.write_text(text)
            snapshots.code_fingerprint.cache_clear()
            prints.append(snapshots.code_fingerprint())
        assert header["code"] == prints[0] != prints[1]
    finally:
        snapshots.code_fingerprint.cache_clear()


def test_processors_of_two_releases_on_one_machine_keep_a_snapshot_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: evaluators of two releases on one machine wrote the same file,
    # so every restart of either found the other's and replayed the whole history (8-11 s on a
    # million events).
    source = tmp_path / "state.py"
    monkeypatch.setattr(snapshots, "fingerprinted_files", lambda: [source])
    folder = tmp_path / "ledger-evaluator"
    state = _state()
    paths = []
    try:
        for release in ("the rules of 1.0", "the rules of 1.1"):
            source.write_text(release)
            snapshots.code_fingerprint.cache_clear()
            paths.append(snapshots.snapshot_file(folder))
            write_snapshot(paths[-1], state, _tails(state), events=len(HISTORY))
        assert paths[0] != paths[1] and paths[1] == snapshots.snapshot_file(folder)
        assert read_snapshot(paths[1]).events == len(HISTORY)
        source.write_text("the rules of 1.0")  # the older release, restarted
        snapshots.code_fingerprint.cache_clear()
        assert snapshots.snapshot_file(folder) == paths[0]
        assert read_snapshot(paths[0]).state == state
        # A command processor's file is named apart too: its memory's module is its code.
        assert snapshots.snapshot_file(folder, Seen()) not in paths
    finally:
        snapshots.code_fingerprint.cache_clear()


def test_a_snapshot_of_other_code_not_written_for_a_day_is_removed_by_the_next_write(
    tmp_path: Path,
) -> None:
    # A release no longer run would leave its file (as large as the state) for good. The next
    # snapshot a processor writes removes those of other code not written for a day, the one
    # of the name before fingerprints too, with their locks; what else the folder holds stays.
    import os
    import time

    from ledger.kafka.governance import GovernanceFollower

    state = _state()
    own = snapshots.snapshot_file(tmp_path)
    day = snapshots.OTHER_CODE_KEPT
    old = {tmp_path / "governance-0123456789abcdef.snapshot", tmp_path / "governance.snapshot"}
    recent = tmp_path / "governance-fedcba9876543210.snapshot"
    unrelated = tmp_path / "inflight"
    for path in (*old, recent, unrelated):
        path.write_bytes(b"a state")
        snapshots.snapshot_lock(path).touch()
    for path in old:
        os.utime(path, (time.time() - day - 60,) * 2)
    os.utime(recent, (time.time() - day + 600,) * 2)
    GovernanceFollower._write_snapshot(own, state, _tails(state), 1, None, None, None)
    assert read_snapshot(own).events == 1
    assert not any(p.exists() or snapshots.snapshot_lock(p).exists() for p in old)
    assert recent.exists() and snapshots.snapshot_lock(recent).exists() and unrelated.exists()
    assert snapshots.remove_other_snapshots(own, now=time.time() + 600) == [recent]
    assert own.exists()  # never its own, however old
    assert snapshots.remove_other_snapshots(own, now=time.time() + 2 * day) == []


def test_a_snapshot_write_cut_short_leaves_no_partial_file_after_an_upgrade(
    tmp_path: Path,
) -> None:
    # An operator's walkthrough: `ledger down` during a snapshot write left a 75-84 MB partial
    # file; after an upgrade no writer of that code came back to remove it, and the clean-up of
    # other code's snapshots left it. Now it goes too, once its writer is gone.
    import os
    import subprocess
    import sys
    import time

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(gone.stdout)
    own = snapshots.snapshot_file(tmp_path)
    cut = tmp_path / f".governance-0123456789abcdef.snapshot.{dead}.ab12cd_e.partial"
    writing = tmp_path / f".governance-0123456789abcdef.snapshot.{os.getpid()}.zz9.partial"
    for path in (cut, writing):
        path.write_bytes(b"half a state")
    assert snapshots.remove_other_snapshots(own, now=time.time()) == [cut]
    assert not cut.exists() and writing.exists()  # a writer still alive keeps its own


def _global(module: str, name: str) -> bytes:
    """A pickle that loads ``module.name`` (protocol 4's STACK_GLOBAL)."""
    text = [bytes([0x8C, len(part)]) + part.encode() for part in (module, name)]
    return b"\x80\x04" + text[0] + text[1] + b"\x93."


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("builtins", "eval"),
        ("ledger.core.state", "replace"),  # imported there from dataclasses
        ("ledger.core.authority", "re.compile"),  # reached through another module
        ("ledger.kafka.governance", "GovernanceFollower"),
    ],
)
def test_a_signed_file_naming_anything_but_the_states_classes_does_not_load(
    tmp_path: Path, module: str, name: str
) -> None:
    state = _state()
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=1)
    _edit(path, edit_payload=lambda b: _global(module, name))
    with pytest.raises(SnapshotUnusable, match="not part of a governance state"):
        read_snapshot(path)


def test_every_field_of_a_built_grant_comes_back_in_its_place() -> None:
    from dataclasses import replace as changed
    from datetime import UTC, datetime

    from ledger.core.authority import grant_from_event
    from ledger.core.events import GrantIssued

    issued = next(e.event for e in HISTORY if isinstance(e.event, GrantIssued))
    full = changed(
        issued,
        condition="amount < 5",
        valid_from=datetime(2030, 1, 1, tzinfo=UTC),
        valid_until=datetime(2031, 2, 2, tzinfo=UTC),
        approved_by="human:approver-of-it",
        note="a note of its own",
    )
    grant = grant_from_event(full)
    out = io.BytesIO()
    pickler = pickle.Pickler(out)
    pickler.dispatch_table = snapshots._dispatch_table({})
    pickler.dump(grant)
    twin = snapshots._StateUnpickler(io.BytesIO(out.getvalue())).load()
    for name in snapshots.ledger.core.authority._OWN_FIELDS:
        assert getattr(twin, name) == getattr(grant, name), name
    assert twin.compiled is not None and twin.compiled.source == "amount < 5"


def test_a_follower_that_tells_a_listener_of_every_event_cannot_have_a_snapshot(
    tmp_path: Path,
) -> None:
    from ledger.kafka.governance import GovernanceFollower
    from ledger.settings import TopicNames

    with pytest.raises(ValueError, match="every event"):
        GovernanceFollower(
            bootstrap="127.0.0.1:1", topics=TopicNames(), on_event=print, snapshot=tmp_path / "s"
        )
    with pytest.raises(ValueError, match="one listener"):
        GovernanceFollower(
            bootstrap="127.0.0.1:1", topics=TopicNames(), on_event=print, memory=Seen()
        )
    # A memory sees every event and is kept in the snapshot: that one can.
    GovernanceFollower(
        bootstrap="127.0.0.1:1", topics=TopicNames(), memory=Seen(), snapshot=tmp_path / "s"
    )


class Seen:
    """A processor's memory of every event (a :class:`SnapshotMemory`): their ids, in order."""

    memory_kind = "event ids"

    def __init__(self) -> None:
        self.ids: list[str] = []

    def remember(self, event: object) -> None:
        self.ids.append(event.event_id)  # type: ignore[attr-defined]

    def saved(self) -> object:
        return {"ids": self.ids}

    def restore(self, saved: object) -> None:
        if type(saved) is not dict or type(saved.get("ids")) is not list:
            raise ValueError("not a list of ids")
        self.ids = saved["ids"]


class Other(Seen):
    """Another kind of memory (another processor's)."""

    memory_kind = "other ids"


def test_a_memory_is_kept_with_the_state_and_read_back_only_by_its_own_kind(
    tmp_path: Path,
) -> None:
    state = _state()
    memory = Seen()
    for entry in HISTORY:
        memory.remember(entry.event)
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=len(HISTORY), memory=memory)
    back = read_snapshot(path, memory=Seen())
    assert back.memory == {"ids": memory.ids} and back.state == state
    assert json.loads(path.read_bytes().split(b"\n")[1])["memory"] == snapshots.memory_kind(memory)
    # Only with the memory it was written with: not without one, nor with another kind, and a
    # processor with a memory does not take a snapshot that has none (an evaluator's).
    with pytest.raises(SnapshotUnusable, match="holds event ids where this processor keeps none"):
        read_snapshot(path)
    with pytest.raises(
        SnapshotUnusable, match="holds event ids where this processor keeps other ids"
    ):
        read_snapshot(path, memory=Other())
    write_snapshot(path, state, _tails(state), events=len(HISTORY))
    assert read_snapshot(path).memory is None
    with pytest.raises(SnapshotUnusable, match="holds no memory where"):
        read_snapshot(path, memory=Seen())


def test_the_memorys_own_module_is_part_of_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a memory saves is decided by its class's code: another version of it is other code.
    state = _state()
    path = tmp_path / "governance.snapshot"
    source = tmp_path / "memory.py"
    source.write_text("remember every id")
    monkeypatch.setattr(snapshots, "_memory_source", lambda memory: (source,))
    write_snapshot(path, state, _tails(state), events=1, memory=Seen())
    assert read_snapshot(path, memory=Seen()).memory == {"ids": []}
    source.write_text("remember every other id")
    snapshots.code_fingerprint.cache_clear()  # (a running process reads its code once)
    with pytest.raises(SnapshotUnusable, match="other code"):
        read_snapshot(path, memory=Seen())
    snapshots.code_fingerprint.cache_clear()
    assert snapshots._memory_source.__name__ == "<lambda>"  # (the real one, below)
    monkeypatch.undo()
    assert snapshots._memory_source(Seen()) == (Path(__file__),)


def test_a_memory_that_saves_anything_but_plain_data_does_not_load(tmp_path: Path) -> None:
    from collections import OrderedDict

    class Ordered(Seen):
        memory_kind = "ordered ids"

        def saved(self) -> object:
            return OrderedDict(ids=self.ids)

    state = _state()
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=1, memory=Ordered())
    with pytest.raises(SnapshotUnusable, match="OrderedDict is not part of a governance state"):
        read_snapshot(path, memory=Ordered())


def test_built_grants_are_written_as_their_fields_and_compiled_again(tmp_path: Path) -> None:
    # A grant the state has built holds its compiled globs and condition (functions, which do
    # not pickle): it is written as its own fields and compiled again when loaded.
    state = state_at(HISTORY)
    built = [g for r in state.principals.values() for g in r.grants.values()]  # builds them all
    assert any(g.condition and g.compiled is not None for g in built)
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=len(HISTORY))
    back = read_snapshot(path).state
    loaded = {g.grant_id: g for r in back.principals.values() for g in r.grants.values()}
    assert len(loaded) == len(built)
    for grant in built:
        twin = loaded[grant.grant_id]
        assert twin == grant and twin.condition_broken == grant.condition_broken
        assert (twin.compiled is None) == (grant.compiled is None)
        if grant.compiled is not None:
            assert twin.compiled.source == grant.condition
            # and its form, which the delegation check compares, without parsing it again
            assert twin.compiled.form is not None and twin.compiled.form == grant.compiled.form
        action = grant.actions[0].replace("*", "anything")
        resource = grant.resource.replace("*", "anything")
        assert twin.covers(action, resource) and twin.covers(action, resource) == grant.covers(
            action, resource
        )
        assert not twin.covers("not." + action, resource)


def test_equal_text_is_written_once_and_loads_as_one_object(tmp_path: Path) -> None:
    # Records decoded from Kafka each hold their own copy of every string.
    from ledger.codec import default_codec
    from ledger.core.state import replay, with_positions

    codec = default_codec()
    events = [codec.decode(codec.encode(entry.event)) for entry in HISTORY]
    state = with_positions(replay(events), dict(state_at(HISTORY).position))
    actors = [g.granted_by for r in state.principals.values() for g in r.grants.values()]
    assert len({id(a) for a in actors}) > len(set(actors))  # copies, as decoded
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=len(HISTORY))
    back = read_snapshot(path).state
    assert back == state
    grants = [g for r in back.principals.values() for g in r.grants.values()]
    for field in ("granted_by", "principal", "resource", "actions"):
        values = [getattr(g, field) for g in grants]
        assert len({id(v) for v in values}) == len(set(values)), field
    ids = [g.grant_id for g in grants]
    assert len(set(ids)) == len(ids)


def test_a_snapshot_sealed_with_the_processors_password_refuses_a_rewrite(tmp_path: Path) -> None:
    # A red team, able to write a processor's state directory but not to read its credential,
    # rewrote the snapshot (a grant added, the SHA-256 trailer recomputed): the processor
    # started from it and answered as if the grant were real. Its snapshots are sealed under
    # a key derived from its Kafka password.
    from ledger.kafka.snapshots import snapshot_key
    from ledger.settings import KafkaSecurity

    def security(password: str | None) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            username="evaluator",
            password=password,
        )

    key = snapshot_key(security("s3cret"))
    assert key is not None and key != snapshot_key(security("other"))
    assert snapshot_key(KafkaSecurity()) is None and snapshot_key(None) is None  # insecure
    state = state_at(HISTORY[:200])
    path = tmp_path / "governance.snapshot"
    write_snapshot(path, state, _tails(state), events=200, key=key)
    assert read_snapshot(path, key=key).state == state
    for other in (snapshot_key(security("other")), None):  # rotated, or read unsealed
        with pytest.raises(SnapshotUnusable, match="do not match their digest"):
            read_snapshot(path, key=other)
    _edit(path, edit_header=lambda fields: fields.update(events=201))  # resealed: SHA-256
    with pytest.raises(SnapshotUnusable, match="sealed under another password, or rewritten"):
        read_snapshot(path, key=key)


def test_a_snapshot_that_cannot_be_written_is_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's walkthrough: with a folder where the snapshot goes, every write logged an
    # ERROR with an IsADirectoryError traceback.
    import logging

    from ledger.kafka.governance import GovernanceFollower

    state = _state()
    path = tmp_path / "governance.snapshot"
    path.mkdir()
    with caplog.at_level(logging.INFO, logger="ledger"):
        GovernanceFollower._write_snapshot(
            path, state, _tails(state), len(HISTORY), None, None, None
        )
    [line] = [r for r in caplog.records if "could not write" in r.getMessage()]
    assert line.exc_info is None and "the next start replays more" in line.getMessage()
    assert "(Is a directory)" in line.getMessage()

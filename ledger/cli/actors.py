"""``ledger actor keygen|add|list|revoke|verify``: who may sign governance commands, and proof of
who did.

Every governance command is signed with its actor's Ed25519 key (``--by ACTOR`` signs with
ACTOR's key from the key store, ``$LEDGER_KEYS`` or ``$LEDGER_HOME/keys``). An administrator
registers an actor's public key with a signed command; the command processor accepts commands
only from registered, unrevoked keys of their actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click

from ledger.cli.common import (
    bootstrap_option,
    connection,
    current_state,
    from_option,
    ledger_options,
    load_settings,
    parse_time,
    principal_arg,
    reason_option,
    submit,
)
from ledger.cli.output import (
    HelpfulGroup,
    handle_errors,
    json_option,
    plural,
    print_json,
    print_table,
    to_jsonable,
)
from ledger.core.ed25519 import weak_key
from ledger.core.events import RegisterActorKey, RevokeActorKey
from ledger.core.jsonform import format_timestamp
from ledger.core.signing import Witnesses, key_id_of, verify_history
from ledger.core.state import keys_registered_with
from ledger.errors import (
    CommandRejectedError,
    ExportError,
    LedgerError,
    TamperDetected,
    UsageError,
)
from ledger.ids import new_id, utcnow
from ledger.kafka.governance import check_governance_log, command_witnesses
from ledger.kafka.topics import COMMANDS_KEPT
from ledger.keys import KeyStore, public_bytes, read_public_key

__all__ = ["group"]


@click.group(
    "actor", cls=HelpfulGroup, short_help="Signing keys: add, list, revoke; verify who signed what."
)
def group() -> None:
    """Actors' signing keys: register, list, revoke, and verify who signed what."""


@group.command("keygen")
@click.argument("actor")
@json_option
@handle_errors
def keygen_cmd(actor: str, as_json: bool) -> None:
    """Create ACTOR's key pair in this key store ($LEDGER_KEYS), contacting nothing: run it
    as ACTOR, on ACTOR's machine, and send only ACTOR.pub to an administrator, who registers
    it with `ledger actor add ACTOR --public-key FILE --by ADMIN`. The private key never
    leaves this store."""
    principal_arg(actor, "ACTOR")
    store = KeyStore(load_settings(None).keys)
    with store.locked(_say_waiting):
        public = public_bytes(store.create(actor))  # never inside an add's make and answer
    key_id = key_id_of(public)
    if as_json:
        print_json(
            {
                "actor": actor,
                "key_id": key_id,
                "private_key": str(store.private_path(actor)),
                "public_key": str(store.public_path(actor)),
            }
        )
        return
    click.echo(
        f"created {key_id} for {actor}: private key {store.private_path(actor)} (keep it), "
        f"public key {store.public_path(actor)}; next, send that file to an administrator, who "
        f"runs `ledger actor add {actor} --public-key PATH --by ADMIN` with the path they saved "
        f"it at (here: {store.public_path(actor)})"
    )


@group.command("add")
@click.argument("actor")
@click.option("--by", "by", required=True, help="The administrator who registers the key.")
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Register this public key (ACTOR.pub, from `ledger actor keygen` on ACTOR's machine) "
    "instead of creating a key pair here: the administrator never holds ACTOR's private key.",
)
@click.option("--note", default=None, help="Why (kept in the ledger).")
@ledger_options
@handle_errors
def add_cmd(
    actor: str,
    by: str,
    public_key_file: Path | None,
    note: str | None,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Register ACTOR's public key, with a command signed by BY: the key given with
    --public-key, else a key pair created in this key store (if it has none for ACTOR).

    Without --public-key the private key (ACTOR.key, mode 0600) stays in the administrator's
    key store, to be handed to ACTOR only; with it (`ledger actor keygen` on ACTOR's machine),
    only ACTOR ever holds it, so no administrator can sign as ACTOR."""
    principal_arg(actor, "ACTOR")
    store = KeyStore(load_settings(bootstrap).keys)
    store.private_key(principal_arg(by, "--by"))  # the signer's key first: nothing made in vain
    if public_key_file is not None:
        public = read_public_key(public_key_file)
        weak = weak_key(public)
        if weak is not None:  # refused by the command processor too; said before sending
            raise UsageError(
                f"{public_key_file} cannot be registered: {weak}; make the key with "
                "`ledger actor keygen` on the actor's machine"
            )
        _register(bootstrap, timeout, as_json, by, actor, public, note, kept=None)
        return
    # The store held until the answer: a pair made here and refused is removed, and a second
    # `actor add` waits rather than register that pair meanwhile (a review: it did, and then
    # the first removed the private key the second had registered).
    # Always under the lock, a pair found here too (a review: one just made by a concurrent
    # add, registered without waiting, was then removed by that add's refusal).
    with store.locked(_say_waiting):
        made = not store.has_private(actor)
        public = public_bytes(store.ensure(actor))
        try:
            _register(
                bootstrap, timeout, as_json, by, actor, public, note,
                kept=str(store.private_path(actor)),
            )  # fmt: skip
        except CommandRejectedError:
            if made:  # a key pair no ledger knows (a README check found it left behind)
                store.private_path(actor).unlink(missing_ok=True)
                store.public_path(actor).unlink(missing_ok=True)
            raise


def _register(
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
    by: str,
    actor: str,
    public: bytes,
    note: str | None,
    *,
    kept: str | None,
) -> None:
    """Send the registration of ``public`` for ``actor``, signed by ``by``, and say the answer
    (``kept``: where its private key is, when made here)."""
    command = RegisterActorKey(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=by,
        principal=actor,
        actor_key_id=key_id_of(public),
        public_key=public,
        note=note,
    )
    submit(
        bootstrap,
        timeout,
        as_json,
        command,
        f"registered {command.actor_key_id} for {actor}",
        extra={"key_id": command.actor_key_id, "private_key": kept},
    )


@group.command("revoke")
@click.argument("actor")
@click.option("--by", "by", required=True, help="The administrator who revokes the key.")
@reason_option
@click.option("--key", "key_id", default=None, help="Only this key id (default: all of ACTOR's).")
@click.option(
    "--force",
    is_flag=True,
    help="Revoke a bootstrap administrator's last active key all the same.",
)
@ledger_options
@handle_errors
def revoke_cmd(
    actor: str,
    by: str,
    reason: str,
    key_id: str | None,
    force: bool,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Revoke ACTOR's signing keys (or one, --key): commands they sign are rejected from now on."""
    settings = load_settings(bootstrap)
    if actor in settings.admins and not force:
        # A red team revoked the only administrator key; every admin command after it was
        # `unknown_actor_key`, with no hint of the way back.
        _keep_an_admin_key(bootstrap, actor, key_id)
    command = RevokeActorKey(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        principal=principal_arg(actor, "ACTOR"),
        reason=reason,
        actor_key_id=key_id,
    )
    done = f"revoked {key_id} of {actor}" if key_id else f"revoked every key of {actor}"
    submit(bootstrap, timeout, as_json, command, done)
    if key_id is None:
        return
    # What a thief of that key may have registered with it (a red team: revoking a stolen key
    # left the thief's own key active, with no word): named, never revoked unasked.
    try:
        state, _ = current_state(bootstrap)
    except LedgerError:  # this command's work is done; the note is a courtesy
        return
    store = KeyStore(settings.keys)
    others = []
    for owner, key in keys_registered_with(state, key_id):
        if _held_here(store, owner, key.public_key):
            # A rotation's new key, registered with the old one (a review: it was named as if
            # a thief's): this key store holds its private half.
            click.echo(
                f"note: {key.key_id} of {owner}, registered with {key.registered_with}, stays "
                "active: its private key is in this key store (a rotation's new key, or another "
                "key made here)",
                err=True,
            )
        else:
            others.append((owner, key))
    for owner, key in others[:NAMED_KEYS]:
        click.echo(
            f"note: {key.key_id} of {owner}, registered {format_timestamp(key.registered_at)} "
            f"by {key.registered_by} with {key.registered_with}, stays active: if {key_id} was "
            f"stolen, revoke it too (`ledger actor revoke {owner} --key {key.key_id} --by "
            f"{by} --reason …`)",
            err=True,
        )
    if len(others) > NAMED_KEYS:
        # An administrator's routine rotation: every key it ever registered (a review: one
        # line each, a wall for a real deployment).
        click.echo(
            f"note: and {len(others) - NAMED_KEYS} more active key(s) registered with {key_id}, "
            "directly or down the chain: `ledger actor list --json` gives each key's "
            "registered_with (only a stolen key's need revoking)",
            err=True,
        )


NAMED_KEYS: Final = 5


def _say_waiting() -> None:
    """What `actor add` and `actor keygen` say while the other holds the key store."""
    click.echo(
        "another `ledger actor add` or `actor keygen` holds the key store; waiting for it…",
        err=True,
    )


"""The most keys a revocation's note names one by one (the rest are counted)."""


def _held_here(store: KeyStore, actor: str, public_key: bytes) -> bool:
    """Whether ``store`` holds ``actor``'s private key for ``public_key`` (as `actor list`'s
    "key here" says); ``False`` when it cannot tell (an unreadable or unsafe key file)."""
    try:
        return store.has_private(actor) and store.public_key(actor) == public_key
    except LedgerError:
        return False


def _keep_an_admin_key(bootstrap: str | None, actor: str, key_id: str | None) -> None:
    """Refuse (one line, exit 2) a revocation that leaves bootstrap administrator ``actor``
    with no active key; quiet when the state cannot be read (the processor decides anyway)."""
    try:
        state, _ = current_state(bootstrap)
    except LedgerError:
        return
    record = state.principals.get(actor)
    active = [k.key_id for k in (record.keys if record is not None else ()) if k.active]
    left = [k for k in active if key_id is not None and k != key_id]
    if active and not left:
        raise UsageError(
            f"{actor} is a bootstrap administrator and this leaves it no active key: every "
            "command it signs would then be refused; rotate it as the README's *Rotating a "
            f"key* says (its .pub into the key store's retired/{actor}/, `ledger down "
            "--keep-broker && ledger up` for a new pair, then revoke the old one with --key), "
            "or pass --force"
        )


@group.command("list")
@bootstrap_option
@json_option
@handle_errors
def list_cmd(bootstrap: str | None, as_json: bool) -> None:
    """Every actor's registered keys (from the ledger), and whether the key store here holds
    the private key."""
    store = KeyStore(load_settings(bootstrap).keys)
    state, _ = current_state(bootstrap)
    rows: list[dict[str, Any]] = []
    for name in sorted(state.principals):
        for key in state.principals[name].keys:
            rows.append(
                {
                    "actor": name,
                    "key_id": key.key_id,
                    "registered_at": key.registered_at,
                    "registered_by": key.registered_by,
                    "registered_with": key.registered_with,
                    "revoked_at": key.revoked_at,
                    "revoked_by": key.revoked_by,
                    "active": key.active,
                    "private_key_here": store.has_private(name)
                    and store.public_key(name) == key.public_key,
                }
            )
    if as_json:
        print_json(rows)
        return
    print_table(
        ["actor", "key", "active", "registered", "by", "revoked", "key here"],
        [
            [
                r["actor"],
                r["key_id"],
                r["active"],
                r["registered_at"],
                r["registered_by"],
                r["revoked_at"] or "-",
                r["private_key_here"],
            ]
            for r in rows
        ],
    )


@group.command("verify")
@bootstrap_option
@from_option(
    "Check the governance events of this export directory (`ledger export`) instead of Kafka's."
)
@click.option(
    "--accepted-before",
    "accepted_before",
    metavar="TIME",
    default=None,
    help="Events recorded before TIME (ISO 8601, or how long ago: 2d; e.g. when you upgraded) whose signatures hold "
    "but whose actor lacked the authority today's rules require are listed as accepted under "
    "earlier rules, not as failures.",
)
@json_option
@handle_errors
def verify_cmd(
    bootstrap: str | None, from_dir: Path | None, accepted_before: str | None, as_json: bool
) -> None:
    """Prove who did what: check every governance event's recorded command signature against
    the keys registered in the ledger (from Kafka, or with --from from an export's record
    bytes), and that its actor held the authority for it then (the bootstrap administrators,
    $LEDGER_ADMINS, may do everything). It also checks the records themselves: every one must decode as a governance event,
    and no offset may be missing (and from an export, every row's columns must agree with its
    record, and every event an accepted command's answer names must be there). Exit 0 when every event is proven and nothing is damaged; otherwise exit 11
    (tamper_detected) naming the first problem (each is listed: DAMAGED, UNPROVEN).

    A rule a release adds holds older history to it too: with --accepted-before TIME, events
    before TIME that fail only today's authority rules are listed as EARLIER-RULES and do not
    fail the run; their signatures must still hold."""
    before = parse_time(accepted_before, "--accepted-before")
    settings = load_settings(bootstrap)
    read_at: datetime = utcnow()  # when what is checked was read: its commands' week ends then
    if from_dir is not None:
        from ledger.audit.history import check_export_history  # pyarrow: only when asked for
        from ledger.audit.manifest import read_manifest
        from ledger.audit.sources import ExportSource

        history, damaged = check_export_history(from_dir)
        manifest = read_manifest(from_dir)
        exported = manifest.read_instant() if manifest is not None else None
        if exported is not None:
            read_at = exported
        try:
            witnesses = ExportSource(from_dir).witnesses()
        except ExportError as exc:  # the commands are evidence beside the events, not the events
            click.echo(f"note: the export's commands could not be read ({exc})", err=True)
            witnesses = Witnesses()
    else:
        address, security = connection(settings, "auditor")
        history, damaged = check_governance_log(address, settings.topics, security=security)
        witnesses = command_witnesses(address, settings.topics, security=security)
    where = "the export's governance rows" if from_dir is not None else "the governance topics"
    # The bootstrap administrators as the command processor knows them ($LEDGER_ADMINS),
    # besides those with a trust anchor: one whose key another administrator registered has none.
    # Each event is held to when the broker received its signed command too, where the command
    # is still there (a week).
    verdicts = verify_history((entry.event for entry in history), settings.admins, witnesses)
    signed = [e.event for e in history if e.event.command_signature is not None]
    witnessed = sum(
        1 for e in signed if (e.command_id, bytes(e.command_signature or b"")) in witnesses.received
    )
    # A signed event of the commands topic's last week without its command: the command should
    # still be there (an auditor removed an export's commands, and verify said "past the
    # commands topic's week" of an export minutes old).
    recent = read_at - COMMANDS_KEPT + timedelta(hours=1)
    missing = sum(
        1
        for e in signed
        if e.occurred_at > recent
        and (e.command_id, bytes(e.command_signature or b"")) not in witnesses.received
    )
    commands_where = "the export" if from_dir is not None else "the commands topic"
    notes = _anchor_notes(history, verdicts, settings.admins, settings.keys)
    if missing:
        notes.append(
            f"{missing} signed events of the week before {read_at.isoformat(timespec='seconds')} "
            f"have no command in {commands_where}, though the commands topic keeps a week: "
            "those are not held to when their command reached the broker (commands removed "
            "from the export, or the topic's retention changed?)"
        )
    earlier = [
        v
        for entry, v in zip(history, verdicts, strict=True)
        if v.authority and before is not None and entry.event.occurred_at < before
    ]
    apart = {id(v) for v in earlier}
    # What is wrong with an event itself first (a signature, a copy, a field): an authority
    # failure is judged in the state the events before it made, unproven ones included, so it
    # may follow from one of those (a red team's forged revocation headed the run with the
    # genuine approval it made look unauthorized).
    bad = sorted(
        (v for v in verdicts if not v.ok and id(v) not in apart), key=lambda v: v.authority
    )
    # Where each was read: a copy under the same id is told apart (a red team).
    located = {
        id(v): f"{e.position_key}@{e.offset}" for e, v in zip(history, verdicts, strict=True)
    }
    if as_json:
        print_json(
            {
                "events": len(verdicts),
                "proven": len(verdicts) - len(bad) - len(earlier),
                "anchors": sum(v.anchor for v in verdicts),
                "signed": len(signed),
                "witnessed": witnessed,
                "unproven": [{**to_jsonable(v), "at": located[id(v)]} for v in bad],
                "accepted_under_earlier_rules": earlier,
                "damaged_rows": damaged,
                "notes": notes,
            }
        )
    else:
        for line in damaged:
            click.echo(f"DAMAGED {line}", err=True)
        for v in bad:
            click.echo(
                f"UNPROVEN {v.event_type} {v.event_id} at {located[id(v)]} by {v.actor}: {v.problem}",
                err=True,
            )
        for v in earlier:
            click.echo(
                f"EARLIER-RULES {v.event_type} {v.event_id} by {v.actor}: {v.problem}", err=True
            )
        anchors = sum(v.anchor for v in verdicts)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        authority = sum(v.authority for v in bad)
        if authority and len(bad) > authority:
            click.echo(
                f"note: {authority} of the unproven events fail only on authority, judged in "
                "the state the events before them made, the unproven events listed first "
                "included: a forged grant or revocation there can be why; read those first",
                err=True,
            )
        elif authority and before is None:
            click.echo(
                f"note: {authority} of the unproven events are signed by their actors and fail "
                "only today's authority rules; a release that added a rule holds older history "
                "to it: if they predate your upgrade, `--accepted-before UPGRADE_TIME` lists "
                "them apart (read each reason first)",
                err=True,
            )
        held = (
            f"{witnessed} of the {len(signed)} signed held to when their command reached the broker"
        )
        if witnessed < len(signed):
            held += f", the others' commands not in {commands_where} (it keeps a week)"
        click.echo(
            f"{len(verdicts) - len(bad) - len(earlier)} of {len(verdicts)} governance events "
            f"proven ({anchors} trust anchors; {held if signed else 'none signed'})"
            + (f"; {len(earlier)} accepted under earlier rules" if earlier else "")
            + (f"; {plural(len(damaged), 'problem')} with {where}" if damaged else "")
        )
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise TamperDetected(f"{where}: {damaged[0]}{more}")
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise TamperDetected(
            f"{first.event_type} {first.event_id} by {first.actor} is not proven: "
            f"{first.problem}{more}"
        )


def _anchor_notes(
    history: Sequence[Any],
    verdicts: Sequence[Any],
    admins: Collection[str] | None = None,
    keys: Path | None = None,
) -> list[str]:
    """One note per administrator holding more than one trust anchor: a rotation adds one, and
    so does anyone who replaced the administrator's ``.pub`` before a processor start. With
    ``admins`` (``$LEDGER_ADMINS`` here), one per principal with a trust anchor that is not
    among them: an anchor makes its principal an administrator for verify, and whoever held
    the command processor's credential could write one (a red team's ``human:mallory``)."""
    anchored: dict[str, list[str]] = {}
    for entry, verdict in zip(history, verdicts, strict=True):
        if verdict.anchor:
            # The key it anchors (the verdict's key_id is the signing key: an anchor has none).
            anchored.setdefault(entry.event.principal, []).append(
                str(getattr(entry.event, "actor_key_id", None) or verdict.key_id)
            )
    notes = [
        f"{principal} has {len(ids)} trust anchor keys ({', '.join(ids)}): rotating its key "
        "adds one; if no one did, someone replaced its .pub in the key store, or wrote the "
        "anchor into the log with the command processor's credential"
        for principal, ids in sorted(anchored.items())
        if len(ids) > 1
    ]
    if keys is not None:  # the key store here: the command processor signs with none other
        store = KeyStore(keys)
        for principal, ids in sorted(anchored.items()):
            with contextlib.suppress(Exception):  # a key store that cannot say: no note
                public = store.public_key(principal)
                if public is not None and key_id_of(public) not in ids:
                    notes.append(
                        f"none of {principal}'s trust anchor keys is its .pub in {keys} "
                        f"({key_id_of(public)}), the key store where verify runs: if it is the "
                        "command processor's, that processor accepts none of their signatures"
                    )
                elif public is not None and len(ids) > 1:
                    others = [i for i in ids if i != key_id_of(public)]
                    notes.append(
                        f"{principal}'s trust anchor keys {', '.join(others)} are not its .pub "
                        f"in {keys}, the key store where verify runs: a rotated key, or one "
                        "written into the log (a command processor configured with this key "
                        "store accepts none of their signatures)"
                    )
    if admins is not None:
        notes += [
            f"{principal} has a trust anchor (the command processor registered its key, as it "
            "does for the administrators it is configured with) but is not in $LEDGER_ADMINS "
            "here, and is taken for an administrator: if it never was one, the anchor was "
            "written with the command processor's credential, and so was what it proves"
            for principal in sorted(anchored)
            if principal not in admins
        ]
    return notes

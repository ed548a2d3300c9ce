"""The actors' signing keys: a key store on disk, and signing governance commands with them.

A key store is a directory (``$LEDGER_KEYS``, default ``$LEDGER_HOME/keys``; mode 0700) with,
per actor, ``<actor>.key`` (its Ed25519 private key, PKCS#8 PEM, mode 0600) and ``<actor>.pub``
(the public key, SubjectPublicKeyInfo PEM). ``ledger actor keygen`` creates them in the
actor's own store (``ledger actor add --public-key`` then registers only the ``.pub``),
``ledger actor add`` alone in the administrator's, ``ledger up`` those of the bootstrap
administrators; the command processor reads only the administrators'
``.pub`` files (its trust anchors), so a deployment gives it those and nothing else.

:func:`sign` fills a command's ``key_id`` and ``signature`` (the bytes signed are the core's:
:func:`ledger.core.signing.signed_bytes`). The SDK signs with the key in its
``ClientConfig.signing_key``; the CLI's ``--by ACTOR`` with ACTOR's key from the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.core.events import Command
from ledger.core.lifecycle import DEFAULT_ADMINS
from ledger.core.signing import key_id_of, signed_bytes
from ledger.core.text import quoted
from ledger.errors import SigningKeyMissing, UsageError
from ledger.files import (
    SMALL_FILE_BYTES,
    UnreadableFile,
    open_private,
    private_dir,
    read_bounded,
    read_bounded_stat,
    write_private,
    written_by_others,
)

log = logging.getLogger(__name__)

__all__ = ["KeyStore", "sign", "public_bytes", "load_private_key", "read_public_key", "C"]

C = TypeVar("C", bound=Command)

_SAFE = ":._@-"
_NAME = re.compile(r"^[A-Za-z0-9:._@%-]+$")


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a key's public half."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


_WARNED: set[Path] = set()  # key files already warned of, once per process


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file, or one :class:`UsageError` line."""
    try:
        data, status = read_bounded_stat(path, SMALL_FILE_BYTES, what="private key file")
    except UnreadableFile as exc:
        if exc.missing:
            raise SigningKeyMissing(f"no signing key at {path}") from None
        raise UsageError(str(exc)) from None
    if status.st_uid not in (os.getuid(), 0):  # a secret mount's files are root's
        # A red team signed as alice with a key store another user owned ($LEDGER_KEYS):
        # whoever owns the file holds the key, and may replace it.
        raise UsageError(
            f"{path} is owned by another user (uid {status.st_uid}): a signing key must be its "
            "signer's own (whoever owns the file holds it and may replace it); use a key store "
            "of your own ($LEDGER_KEYS)"
        )
    mode = status.st_mode & 0o777
    if mode & 0o022:  # anyone else could replace the key: refused
        raise UsageError(
            f"{path} may be written by others (mode {mode:04o}): a signing key must be its "
            f"owner's only; run `chmod 600 {path}` (and treat the key as exposed)"
        )
    if mode & 0o044 and path not in _WARNED:  # a secret mount (Kubernetes, Docker) may need it
        _WARNED.add(path)
        log.warning(
            "%s may be read by others (mode %04o): anyone who can read it can sign as its "
            "actor; run `chmod 600` on it, or mount it 0400 (0440 for a group of its own)",
            path,
            mode,
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def sign(command: C, key: Ed25519PrivateKey) -> C:
    """``command`` signed with ``key``: its ``key_id`` and ``signature`` filled in."""
    signature = key.sign(signed_bytes(command))
    return dataclasses.replace(command, key_id=key_id_of(public_bytes(key)), signature=signature)


def read_public_key(path: Path) -> bytes:
    """The raw Ed25519 public key in the PEM file ``path`` (an actor's ``.pub``), or one
    :class:`~ledger.errors.UsageError` line saying what is wrong with the file."""
    try:
        raw = read_bounded(path, SMALL_FILE_BYTES, what="public key file")
    except UnreadableFile as exc:
        raise UsageError(str(exc)) from None
    return _public_key_in(raw, path)


def _public_key_in(raw: bytes, path: Path) -> bytes:
    """The raw Ed25519 public key in ``raw``, the PEM text read from ``path``."""
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key")
    return public_bytes(key)


class KeyStore:
    """The actors' keys under one directory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, actor: str, suffix: str) -> Path:
        return self.path / f"{quote(actor, safe=_SAFE)}{suffix}"

    def private_path(self, actor: str) -> Path:
        return self._file(actor, ".key")

    def public_path(self, actor: str) -> Path:
        return self._file(actor, ".pub")

    def has_private(self, actor: str) -> bool:
        return self.private_path(actor).is_file()

    def create(self, actor: str) -> Ed25519PrivateKey:
        """A new key pair for ``actor`` (refused if it has one: keys are never overwritten)."""
        if self.has_private(actor):
            raise UsageError(
                f"{actor} already has a key in {self.path}: `ledger actor revoke` it first, "
                f"or remove {self.private_path(actor)} yourself"
            )
        key = Ed25519PrivateKey.generate()
        private_dir(self.path)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(self.private_path(actor), pem.decode("ascii"))
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        write_private(self.public_path(actor), public.decode("ascii"))
        return key

    @contextlib.contextmanager
    def locked(self, waiting: Callable[[], object] = lambda: None) -> Iterator[None]:
        """The store held by this process alone for the block (other writers wait, and
        ``waiting`` is called first, to say so): a review found a refused `actor add` removing
        the pair a concurrent one had just registered."""
        private_dir(self.path)
        fd = open_private(self.path / ".lock", os.O_WRONLY | os.O_CREAT)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting()
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def ensure(self, actor: str) -> Ed25519PrivateKey:
        """``actor``'s key, created if the store has none."""
        return self.private_key(actor) if self.has_private(actor) else self.create(actor)

    def private_key(self, actor: str) -> Ed25519PrivateKey:
        """``actor``'s private key, or :class:`SigningKeyMissing` saying what to do."""
        path = self.private_path(actor)
        if not os.path.lexists(path):  # anything else there is read, and refused, below
            if actor in DEFAULT_ADMINS:
                raise SigningKeyMissing(
                    f"no signing key for {actor} in {self.path}: `ledger up` makes the bootstrap "
                    "administrator's key when it first starts the ledger; run it first (or set "
                    "$LEDGER_KEYS to where that key lives)"
                )
            raise SigningKeyMissing(
                f"no signing key for {actor} in {self.path}: commands --by {actor} must be "
                f"signed with its key (make one here with `ledger actor keygen {actor}` and have "
                f"an administrator register its .pub with `ledger actor add {actor} --public-key "
                "FILE --by ADMIN`; set $LEDGER_KEYS if your keys live elsewhere)"
            )
        return load_private_key(path)

    def public_key(self, actor: str) -> bytes | None:
        """``actor``'s raw public key (from its ``.pub``, else its ``.key``), or ``None``. The
        command processor trusts the bootstrap administrators' as its anchors, so a ``.pub``
        that others may write (or in a folder they may) is refused, as a private key is."""
        path = self.public_path(actor)
        if path.is_file():
            try:
                raw, status = read_bounded_stat(path, SMALL_FILE_BYTES, what="public key file")
            except UnreadableFile as exc:
                raise UsageError(str(exc)) from None
            found = written_by_others(path, status)  # judged on the bytes read
            if found is not None:
                where, problem = found
                raise UsageError(
                    f"{where} {problem}: whoever wrote {path.name} could sign as {actor}; "
                    f"run `chmod go-w {where}` and check who owns it"
                )
            return _public_key_in(raw, path)
        if self.has_private(actor):
            return public_bytes(self.private_key(actor))
        return None

    def retired_keys(self, actor: str) -> list[bytes]:
        """``actor``'s retired public keys: the ``.pub`` files in ``retired/ACTOR/`` (a rotated
        bootstrap administrator's old key, moved there), which the command processor still
        trusts as the anchors that registered other keys. Checked as :meth:`public_key` checks
        a ``.pub``: one that others may write is refused."""
        folder = self.path / "retired" / quote(actor, safe=_SAFE)
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.pub"))[:100]:
            try:
                raw, status = read_bounded_stat(path, SMALL_FILE_BYTES, what="public key file")
            except UnreadableFile as exc:  # its name is whoever wrote the folder's (a review)
                raise UsageError(printable_text(str(exc))) from None
            problem = written_by_others(path, status)
            if problem is not None:
                where, why = problem
                raise UsageError(  # the name quoted: whoever may write there chose it (a review)
                    f"{quoted(str(where))} {why}: whoever wrote {quoted(path.name)} could sign "
                    f"as {printable_text(actor)}; run `chmod go-w {quoted(str(where))}` and check who owns it"
                )
            found.append(_public_key_in(raw, path))
        return found

    def retired_actors(self) -> list[str]:
        """The actors with a ``retired/`` folder of old public keys."""
        folder = self.path / "retired"
        if not folder.is_dir():
            return []
        return sorted(unquote(p.name) for p in folder.iterdir() if p.is_dir())

    def actors(self) -> list[str]:
        """The actors with a key here (private or public)."""
        if not self.path.is_dir():
            return []
        names = {unquote(p.stem) for p in self.path.iterdir() if p.suffix in (".key", ".pub")}
        return sorted(n for n in names if _NAME.match(quote(n, safe=_SAFE)))


def printable_text(text: str) -> str:
    """``text`` with every character a terminal would not show as itself escaped (a file name
    whoever may write a folder chose, in a warning or a log line)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

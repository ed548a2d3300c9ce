"""Generate the Compose stack's secrets (run once, from the repository root, with the project
installed): python compose/make-secrets.py

Writes compose/secrets/ (0700): credentials/<role>.json for every role and broker.json (random
SCRAM passwords, 0600), and keys/ with the bootstrap administrator's Ed25519 key pair. The
broker container adds the SCRAM users when it formats its log directory; each service mounts
only its own role's credential. Never commit compose/secrets/.
"""

from __future__ import annotations

from pathlib import Path

from ledger.files import private_umask
from ledger.keys import KeyStore
from ledger.local.credentials import ensure
from ledger.settings import Settings

private_umask()
secrets = Path(__file__).resolve().parent / "secrets"
settings = Settings(home=secrets, credentials_dir=secrets / "credentials", key_store=secrets / "keys")
users = ensure(settings)
KeyStore(settings.keys).ensure("human:admin")
print(f"wrote {len(users)} credentials and human:admin's key under {secrets}")

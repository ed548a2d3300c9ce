"""Revoking a role membership the ledger holds, whatever the form its principal was accepted in."""

from __future__ import annotations

from ledger.ids import new_id, utcnow
from ledger.testing import ADMIN


def stamp(actor: str) -> dict[str, object]:
    return {"event_id": new_id(), "occurred_at": utcnow(), "actor": actor}


def test_a_membership_an_earlier_release_accepted_in_another_form_can_be_revoked() -> None:
    # A review: "agent:x\n" was a principal before the form held for the whole text; its
    # membership still authorizes, and revoking it was refused invalid_principal, for good.
    from ledger.core import decide
    from ledger.core.events import RevokeRole, RoleAssigned, RoleRevoked
    from ledger.core.state import EMPTY_STATE, fold

    odd = "agent:x\n"
    state = fold(
        EMPTY_STATE,
        RoleAssigned(
            event_id="e1", occurred_at=utcnow(), actor=ADMIN, command_id="c1",
            principal=odd, sequence=1, role="role:ops",
        ),
    )  # fmt: skip
    admins = frozenset({ADMIN})

    def revoke(principal: str) -> object:
        command = RevokeRole(**stamp(ADMIN), principal=principal, role="role:ops")
        return decide(state, command, now=utcnow(), new_id=new_id, admins=admins)

    [revoked] = revoke(odd)  # type: ignore[misc]
    assert isinstance(revoked, RoleRevoked) and revoked.principal == odd
    refused = revoke("agent:y\n")  # nothing held under it: the form is checked, as before
    assert getattr(refused, "code", None) == "invalid_principal"

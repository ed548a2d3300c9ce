"""The command line's word on a refusal its own clock explains (deployment_changed)."""

from __future__ import annotations


def test_a_deployment_changed_refusal_says_when_the_signers_clock_is_behind() -> None:
    # A review: a signer whose clock was 90 s behind was refused again and again, each time
    # told to look again and send it anew; the command line now says its clock is behind.
    from datetime import UTC, datetime, timedelta

    from ledger.cli.common import _clock_behind
    from ledger.core.jsonform import format_timestamp
    from ledger.errors import CommandRejectedError

    def refusal(changed: datetime) -> CommandRejectedError:
        signed = changed - timedelta(seconds=5)
        return CommandRejectedError(
            f"refund's deployment changed after this rollback was signed "
            f"({format_timestamp(signed)}): human:bob made it v1 active at "
            f"{format_timestamp(changed)}. A rollback is judged against what its sender saw",
            code="deployment_changed",
        )

    ahead = datetime.now(UTC) + timedelta(seconds=90)
    said = _clock_behind(refusal(ahead))
    assert said is not None and "this machine's clock" in said and "behind" in said
    assert _clock_behind(refusal(datetime.now(UTC) - timedelta(seconds=1))) is None
    other = CommandRejectedError("no such policy", code="unknown_policy")
    assert _clock_behind(other) is None

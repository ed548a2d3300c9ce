"""A request's matching work (:class:`ledger.core.globwork.MatchWork`): the allowance, the
budget past it, and the ``governs`` look-up charged once per action."""

from __future__ import annotations

from ledger.core.cel import Meter
from ledger.core.globwork import MATCH_FREE, MatchWork


def test_matching_within_the_allowance_touches_no_budget() -> None:
    work = MatchWork(None, 100)
    assert work.charge(MATCH_FREE)
    assert work.metered is None  # no budget was needed, so none was made


def test_past_the_allowance_all_of_the_matching_is_charged() -> None:
    meter = Meter(2_000)
    work = MatchWork(meter, 2_000)
    assert work.charge(MATCH_FREE - 10)
    assert work.charge(60)  # 50 past the allowance: the whole matching counts, the free part too
    assert meter.left == 2_000 - (MATCH_FREE + 50)
    assert not work.charge(1_000)  # the budget runs out
    assert meter.left == 2_000 - (MATCH_FREE + 50) - 1_000


def test_each_action_is_looked_up_once_per_request() -> None:
    meter = Meter(10_000)
    work = MatchWork(meter, 10_000)
    assert work.charge(MATCH_FREE)  # the allowance spent: each charge below reaches the meter
    assert work.charge_lookup("refund.issue", 100)  # past it: the whole matching is charged
    assert work.charge_lookup("refund.issue", 100)  # the same action again: already paid
    assert meter.left == 10_000 - (MATCH_FREE + 100)
    assert work.charge_lookup("refund.void", 100)  # a second action: paid
    assert work.charge_lookup("crm.read", 100)  # and a third
    assert meter.left == 10_000 - (MATCH_FREE + 300)
    for action in ("refund.issue", "refund.void", "crm.read"):  # none of them twice
        assert work.charge_lookup(action, 100)
    assert meter.left == 10_000 - (MATCH_FREE + 300)
    work.next_item()  # a pre-evaluation's next item: the look-ups stay paid
    assert work.charge_lookup("refund.void", 100)
    assert meter.left == 10_000 - (MATCH_FREE + 300)

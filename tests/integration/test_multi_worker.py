"""Two evaluator workers share the request partitions, and each holds the whole governance state.

Faust's GlobalTable is unreliable across workers, so every evaluator follows the governance topics
itself; this proves it: requests on every partition are answered, by both workers, under the
right version — before and after a promotion.
"""

from __future__ import annotations

from harness import ADMIN, AGENT, GOOD_FACTS, covers, policy_doc, wait_for


def _answer_all(client, policy: str, n: int, tag: str):
    futures = [
        client.send_request(
            client.request(
                action=f"{policy}.issue",
                principal=AGENT,
                resource=f"account:{tag}-{i}",
                facts=GOOD_FACTS,
            )
        )
        for i in range(n)
    ]
    return [f.result(timeout=30) for f in futures]


def test_two_evaluators_share_partitions_and_both_follow_governance(stack_factory):
    stack = stack_factory(evaluation_partitions=4)
    stack.start("evaluator", instance=2)
    stack.grant_defaults()
    admin, agent = stack.client(ADMIN), stack.client(AGENT)
    policy = "mw"

    v1 = stack.deploy(admin, policy_doc(policy, auto_below=500))
    at_v1 = agent.governance_position()

    def both_workers_answer_v1():
        decisions = _answer_all(agent, policy, 120, "a")
        settled = [d for d in decisions if covers(d.governance_position, at_v1)]
        workers = {d.evaluator_id for d in settled}
        return decisions if len(settled) == len(decisions) and len(workers) == 2 else None

    # The second worker joins the group asynchronously: wait until both hold partitions.
    decisions = wait_for(both_workers_answer_v1, timeout=60, what="both evaluators answering at v1")
    assert {d.policy_version for d in decisions} == {v1}
    assert {d.rule for d in decisions} == {"auto-refund"}  # 120.50 < 500

    # A promotion reaches both workers: every partition now decides with v2.
    v2 = stack.deploy(admin, policy_doc(policy, auto_below=100))
    at_v2 = agent.governance_position()

    def all_at_v2():
        answers = _answer_all(agent, policy, 120, "b")
        return answers if all(covers(d.governance_position, at_v2) for d in answers) else None

    after = wait_for(all_at_v2, timeout=30, what="both evaluators applying v2")
    assert {d.policy_version for d in after} == {v2}
    assert {d.rule for d in after} == {"credit-only"}  # 120.50 is not < 100 any more
    assert len({d.evaluator_id for d in after}) == 2, stack.logs()

-- question: Where did a non-deciding version of policy `policy` (a shadow, or the other of
--   active and canary) answer differently from the version that decided: per shadow version,
--   decided -> would-have-been determinations and rules, with counts and an example (its
--   request id, which `ledger decisions --request` and `ledger replay --decision` take).
--   differs: 'determination', or 'constraints' where the determination is the same and the
--   constraints are not (a cap lowered): an example's are shadow_constraints beside
--   decided_constraints. Pre-evaluation items record no shadow results: they are never
--   counted here (`ledger policy simulate` re-decides them against a version).
-- param: policy VARCHAR the policy name
-- known: policy policy_log.policy
SELECT version AS shadow_version, stage AS shadow_stage, decided_version, differs, decided,
       determination AS shadow_said, decided_rule, rule AS shadow_rule, count(*) AS decisions,
       min(decided_at) AS first, max(decided_at) AS last,
       arg_min(request_id, decision_id) AS example_request, min(decision_id) AS example_decision,
       -- the example's own, NULL too (arg_min would skip to another decision's)
       arg_min_null(decided_constraints, decision_id) AS decided_constraints,
       arg_min_null(constraints, decision_id) AS shadow_constraints
FROM shadow_results
WHERE policy = $policy AND differs IS NOT NULL
GROUP BY ALL
ORDER BY decisions DESC, shadow_version, decided_version, differs;

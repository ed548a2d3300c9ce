-- question: Which decisions did version `version` of policy `policy` make (as active or canary
--   version), newest first: request, principal, action, resource, determination, rule. Single
--   decisions and the items of pre-evaluation batches alike: kind says which (decision,
--   batch_item); an item has its batch's decision and request ids, its batch_id, item_index
--   and item_id, and policy_stage NULL (a batch records no stage).
-- param: policy VARCHAR the policy name
-- param: version BIGINT the version number
-- known: policy policy_log.policy
-- known: version policy_log.version
SELECT decision_id, request_id, decided_at, principal, action, resource, determination,
       rule, reason_code, policy_stage, constraints, kind, batch_id, item_index, item_id
FROM all_decisions
WHERE policy = $policy AND policy_version = $version
ORDER BY decided_at DESC, decision_id, item_index;

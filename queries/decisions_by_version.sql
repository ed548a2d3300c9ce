-- question: Which decisions did version `version` of policy `policy` make (as active or canary
--   version), newest first: request, principal, action, resource, determination, rule.
-- param: policy VARCHAR the policy name
-- param: version BIGINT the version number
SELECT decision_id, request_id, decided_at, principal, action, resource, determination,
       rule, reason_code, policy_stage, constraints
FROM decisions
WHERE policy = $policy AND policy_version = $version
ORDER BY decided_at DESC, decision_id;

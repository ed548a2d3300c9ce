-- question: What happened to policy `policy`, in order: every proposal, approval, promotion,
--   rollback and retirement, with who, when, why and the version it concerned.
-- param: policy VARCHAR the policy name
-- known: policy policy_log.policy
SELECT sequence, occurred_at, event_type, actor,
       coalesce(version, to_version) AS version, stage, percent, previous_version,
       from_version, coalesce(reason, note) AS why, content_hash
FROM policy_log
WHERE policy = $policy
ORDER BY sequence;

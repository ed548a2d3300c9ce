-- question: What happened to policy `policy`, in order: every proposal, approval, promotion,
--   rollback and retirement, with who, when, why and the version it concerned. A rollback's
--   version is the one it went back to (from_version: the active version it replaced, which
--   ending a canary leaves as it was); the versions it took out of service, a canary's
--   included, are in the `rollbacks` query (rolled_back_version).
-- param: policy VARCHAR the policy name
-- known: policy policy_log.policy
SELECT sequence, occurred_at, event_type, actor,
       coalesce(version, to_version) AS version, stage, percent, previous_version,
       from_version, coalesce(reason, note) AS why, content_hash
FROM policy_log
WHERE policy = $policy
ORDER BY sequence;

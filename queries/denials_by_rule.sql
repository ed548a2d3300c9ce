-- question: Which rules deny most: denials per policy, version and rule (rule NULL: the
--   policy's default), with the reason code, counts and the last time. Single decisions and
--   pre-evaluation items alike (each denied item counts once).
SELECT policy, policy_version, rule, reason_code, count(*) AS denials,
       count(DISTINCT principal) AS principals, max(decided_at) AS last_denied
FROM all_decisions
WHERE determination = 'deny'
GROUP BY ALL
ORDER BY denials DESC, policy, policy_version, rule;

-- question: Which policy versions were deployed at instant `at`: the active version of each
--   policy, its canary (with the percent of traffic) and its shadows, since when and by whose
--   hand. The same answer as `ledger replay --at` (a property test holds them equal).
-- param: at TIMESTAMPTZ the instant (ISO 8601; UTC when it has no offset)
SELECT policy, version, stage, percent, valid_from AS since, changed_by, change
FROM policy_timeline
WHERE stage IN ('active', 'canary', 'shadow')
  AND valid_from <= $at AND (valid_to IS NULL OR $at < valid_to)
ORDER BY policy, CASE stage WHEN 'active' THEN 0 WHEN 'canary' THEN 1 ELSE 2 END, version;

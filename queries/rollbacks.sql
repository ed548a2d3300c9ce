-- question: Every rollback: which policy, from which version to which, when, by whom and why,
--   and how many decisions the rolled-back version had made (single decisions and
--   pre-evaluation items, each item counting once).
SELECT r.occurred_at AS rolled_back_at, r.policy, r.from_version, r.to_version, r.actor AS by,
       r.reason,
       (SELECT count(*) FROM all_decisions d
        WHERE d.policy = r.policy AND d.policy_version = r.from_version
          AND d.decided_at <= r.occurred_at) AS decisions_by_from_version
FROM policy_log r
WHERE r.event_type = 'PolicyRolledBack'
ORDER BY r.occurred_at;

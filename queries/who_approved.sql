-- question: Who wrote, approved and promoted each version of policy `policy`: author and
--   proposal time, approver and approval time, and every promotion or rollback to it (stage,
--   "(rollback)" for a rollback, by whom, when: RFC 3339 UTC with microseconds, as the ledger
--   records it).
-- param: policy VARCHAR the policy name
-- known: policy policy_log.policy
WITH promotions AS (
    SELECT policy, version,
           string_agg(stage || coalesce(' ' || percent || '%', '')
                      || CASE WHEN change = 'PolicyRolledBack' THEN ' (rollback)' ELSE '' END
                      || ' by ' || changed_by
                      || ' at ' || strftime(valid_from, '%Y-%m-%dT%H:%M:%S.%fZ'), '; '
                      ORDER BY sequence) AS promotions,
           min(valid_from) FILTER (WHERE stage = 'active') AS first_active
    FROM policy_timeline
    WHERE policy = $policy AND change IN ('PolicyVersionPromoted', 'PolicyRolledBack')
      AND stage IN ('shadow', 'canary', 'active')
    GROUP BY policy, version
)
SELECT p.version, p.actor AS author, p.occurred_at AS proposed_at, a.actor AS approver,
       a.occurred_at AS approved_at, pr.promotions, pr.first_active, p.content_hash, p.note
FROM policy_log p
LEFT JOIN policy_log a ON a.event_type = 'PolicyVersionApproved' AND a.policy = p.policy
     AND a.version = p.version
LEFT JOIN promotions pr ON pr.policy = p.policy AND pr.version = p.version
WHERE p.event_type = 'PolicyVersionProposed' AND p.policy = $policy
ORDER BY p.version;

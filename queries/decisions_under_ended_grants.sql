-- question: Which decisions cite a grant that has since ended: revoked (by whom, when, why) or
--   expired (its valid_until passed by the export's newest decision). One row per decision or
--   pre-evaluation item that cites such a grant (grant_id), newest ending first, whatever its
--   determination (the grant let the principal ask; the policy then allowed or denied: filter
--   on determination for the allowed ones): what an auditor re-examines after a grant is
--   withdrawn. A grant held through a role is the role's
--   (principal names the role, decided_for the principal that asked). after_end: whether the
--   decision was made after the grant ended, which the ledger never does (an evaluator that
--   applied the revocation no longer holds the grant): a revocation is placed by the
--   governance position the decision cites (at or past the revocation's offset), not by the
--   times, which differ by the milliseconds an evaluator takes to apply it (a decision without
--   a position, by an evaluator older than the field, is placed by time); an expiry by the
--   decision's time against valid_until (a grant revoked after it had expired is expired). A true here is what to take to the ledger's operator.
WITH newest AS (SELECT max(decided_at) AS at FROM all_decisions),
revoked AS (
    SELECT grant_id, principal, '$."' || topic || '/' || partition || '"' AS cited_path,
           "offset" AS at_offset
    FROM grant_log
    WHERE event_type = 'GrantRevoked'
),
ended AS (
    -- A grant revoked after it had expired ended when it expired (a review).
    SELECT g.*,
           CASE WHEN g.revoked_at IS NOT NULL
                     AND (g.valid_until IS NULL OR g.revoked_at < g.valid_until)
                THEN 'revoked' ELSE 'expired' END AS ended,
           CASE WHEN g.revoked_at IS NOT NULL
                     AND (g.valid_until IS NULL OR g.revoked_at < g.valid_until)
                THEN g.revoked_at ELSE g.valid_until END AS ended_at
    FROM grant_history g, newest n
    WHERE g.revoked_at IS NOT NULL OR (g.valid_until IS NOT NULL AND g.valid_until <= n.at)
)
SELECT e.grant_id, e.principal, e.ended, e.ended_at, e.revoked_by, e.revoke_reason,
       e.granted_by, e.issued_at, e.valid_from, e.valid_until,
       d.decision_id, d.request_id, d.kind, d.item_id, d.decided_at, d.principal AS decided_for,
       d.action, d.resource, d.determination, d.policy, d.policy_version,
       CASE WHEN e.valid_until IS NOT NULL AND d.decided_at >= e.valid_until THEN true
            WHEN e.ended = 'expired' THEN false
            WHEN TRY_CAST(d.governance_position->>r.cited_path AS BIGINT) IS NULL
                THEN d.decided_at >= e.ended_at
            ELSE TRY_CAST(d.governance_position->>r.cited_path AS BIGINT) >= r.at_offset
       END AS after_end
FROM ended e JOIN all_decisions d ON d.grant_id = e.grant_id
LEFT JOIN revoked r ON r.grant_id = e.grant_id AND r.principal = e.principal
ORDER BY e.ended_at DESC, e.grant_id, d.decided_at, d.decision_id, d.item_index;

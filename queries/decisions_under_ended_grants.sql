-- question: Which decisions cite a grant that has since ended: revoked (by whom, when, why) or
--   expired (its valid_until passed by the export's newest decision). One row per decision or
--   pre-evaluation item that cites such a grant (grant_id), newest ending first, whatever its
--   determination (the grant let the principal ask; the policy then allowed or denied: filter
--   on determination for the allowed ones): what an auditor re-examines after a grant is
--   withdrawn. A grant held through a role is the role's
--   (principal names the role, decided_for the principal that asked).
WITH newest AS (SELECT max(decided_at) AS at FROM all_decisions),
ended AS (
    SELECT g.*, CASE WHEN g.revoked_at IS NOT NULL THEN 'revoked' ELSE 'expired' END AS ended,
           coalesce(g.revoked_at, g.valid_until) AS ended_at
    FROM grant_history g, newest n
    WHERE g.revoked_at IS NOT NULL OR (g.valid_until IS NOT NULL AND g.valid_until <= n.at)
)
SELECT e.grant_id, e.principal, e.ended, e.ended_at, e.revoked_by, e.revoke_reason,
       e.granted_by, e.issued_at, e.valid_from, e.valid_until,
       d.decision_id, d.request_id, d.kind, d.item_id, d.decided_at, d.principal AS decided_for,
       d.action, d.resource, d.determination, d.policy, d.policy_version
FROM ended e JOIN all_decisions d ON d.grant_id = e.grant_id
ORDER BY e.ended_at DESC, e.grant_id, d.decided_at, d.decision_id, d.item_index;

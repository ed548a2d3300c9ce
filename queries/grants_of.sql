-- question: Which grants were in force for principal `principal` at instant `at`: its own and
--   those of every role it held then (via names the role), issued by then, not yet revoked,
--   and inside their validity window (valid_from <= at < valid_until). The same answer as
--   `ledger replay --at … --principal …` (a property test holds them equal). granted_by signed
--   the grant; approved_by is granted_by's claim, not the approver's signature.
-- param: principal VARCHAR the principal (kind:name, e.g. agent:refund-bot)
-- param: at TIMESTAMPTZ the instant (ISO 8601; UTC when it has no offset)
-- known: principal grant_history.principal role_history.principal all_decisions.principal
WITH holders AS (
    SELECT $principal AS holder, CAST(NULL AS VARCHAR) AS via
    UNION ALL
    SELECT role, role FROM role_history
    WHERE principal = $principal AND assigned_at <= $at
      AND (revoked_at IS NULL OR $at < revoked_at)
)
SELECT g.grant_id, $principal AS principal, h.via, g.actions, g.resource, g.condition,
       g.valid_from, g.valid_until, g.granted_by, g.approved_by, g.issued_at
FROM grant_history g JOIN holders h ON g.principal = h.holder
WHERE g.issued_at <= $at AND (g.revoked_at IS NULL OR $at < g.revoked_at)
  AND (g.valid_from IS NULL OR g.valid_from <= $at)
  AND (g.valid_until IS NULL OR $at < g.valid_until)
ORDER BY g.grant_id;

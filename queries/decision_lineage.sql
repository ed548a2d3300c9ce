-- question: Which policy governed decision (or request) `id`, and who stands behind it: the
--   determination and rule, the policy version and its stage then, who wrote, approved and
--   promoted that version, and how the version reached that stage (stage_reached_by:
--   promotion, or rollback when a rollback made it active again: then promoted_by is NULL and
--   rolled_back_by and rollback_reason say who and why), and until when it held that stage
--   (stage_until; NULL: it still does); the grant it was decided under, with who issued and
--   who approved it (grant_granted_by, grant_approved_by). A pre-evaluation batch (its decision id or request id) answers
--   one row per item (kind batch_item, batch_id, item_index, item_id); a batch records no
--   stage, so an item's policy_stage is the one policy_timeline gives its version (active or
--   canary) at the governance position the decision cites (its time, for a decision recorded
--   without one): an evaluator applies a change milliseconds after it is recorded, so the
--   time would name the stage before it for decisions made in those milliseconds. The approval's proof (the approver's key id, signature and the
--   signed bytes) is in the approval_* columns: check it with the approver's public_key
--   (grant_events, ActorKeyRegistered), as the README's signed-commands section says.
-- param: id VARCHAR a decision id or a request id (of a single request or of a batch), or
--   one item of a batch as `ledger decisions` prints it, REQUEST#ITEM
-- known: id all_decisions.decision_id all_decisions.request_id
WITH d AS (
    SELECT * FROM all_decisions
    WHERE decision_id = $id OR request_id = $id
       OR (kind = 'batch_item' AND request_id || '#' || item_id = $id)
)
SELECT d.decision_id, d.request_id, d.decided_at, d.principal, d.action, d.resource,
       d.determination, d.rule, d.reason_code, d.policy, d.policy_version,
       coalesce(d.policy_stage, t.stage) AS policy_stage,
       p.actor AS author, a.actor AS approver, a.occurred_at AS approved_at,
       CASE WHEN t.change = 'PolicyVersionPromoted' THEN t.changed_by END AS promoted_by,
       t.valid_from AS stage_since,
       CASE t.change WHEN 'PolicyVersionPromoted' THEN 'promotion'
                     WHEN 'PolicyRolledBack' THEN 'rollback' END AS stage_reached_by,
       CASE WHEN t.change = 'PolicyRolledBack' THEN t.changed_by END AS rolled_back_by,
       CASE WHEN t.change = 'PolicyRolledBack' THEN t.reason END AS rollback_reason,
       d.grant_id,
       d.kind, d.batch_id, d.item_index, d.item_id,
       a.command_key_id AS approval_key_id, a.command_signature AS approval_signature,
       a.signed_command AS approval_signed_command,
       t.valid_to AS stage_until,
       (SELECT any_value(g.granted_by) FROM grant_history g WHERE g.grant_id = d.grant_id)
           AS grant_granted_by,
       (SELECT any_value(g.approved_by) FROM grant_history g WHERE g.grant_id = d.grant_id)
           AS grant_approved_by
FROM d
LEFT JOIN policy_log p ON p.event_type = 'PolicyVersionProposed' AND p.policy = d.policy
     AND p.version = d.policy_version
LEFT JOIN policy_log a ON a.event_type = 'PolicyVersionApproved' AND a.policy = d.policy
     AND a.version = d.policy_version
LEFT JOIN policy_timeline t ON t.policy = d.policy AND t.version = d.policy_version
     AND (t.stage = d.policy_stage
          OR (d.kind = 'batch_item' AND t.stage IN ('active', 'canary')))
     AND CASE WHEN TRY_CAST(d.governance_position->>('$."' || t.position || '"') AS BIGINT)
                   IS NULL
              THEN t.valid_from <= d.decided_at
                   AND (t.valid_to IS NULL OR d.decided_at < t.valid_to)
              ELSE t.from_offset
                   <= TRY_CAST(d.governance_position->>('$."' || t.position || '"') AS BIGINT)
                   AND (t.to_offset IS NULL
                        OR TRY_CAST(d.governance_position->>('$."' || t.position || '"') AS BIGINT)
                           < t.to_offset) END
ORDER BY d.decided_at, d.decision_id, d.item_index;

-- question: Which decisions did version `version` of policy `policy` decide differently from
--   the version before it (the recall list after a bad rollout)? For each decision it made,
--   what the previous version said, read from the shadow results recorded with the decision.
--   Differently: another determination, or the same one with other constraint values (a cap
--   of 400.00 where the previous version gave 500.00); `differs` says which, as the
--   shadow_results view does, with both answers' constraints beside each other.
--   The previous version is the one active alongside it while it was the canary, else the
--   version that was active just before it first became active.
--   Covered: decisions made while the previous version was evaluated beside it (active beside a
--   canary, or kept in shadow). Not covered: decisions without such a shadow result (the
--   previous version was no longer deployed): they are listed with flipped NULL and the
--   version to re-evaluate them against as previous_version (the active one beside a canary
--   at the time, else the one before; `ledger policy simulate` with its file re-decides them). Rows with flipped false are left out. The items of
--   pre-evaluation batches are examined too (kind batch_item, with batch_id, item_index and
--   item_id; kind decision: a single decision); a batch records no shadow results, so they
--   are always listed as not covered; their policy_stage is the one policy_timeline gives
--   their version at the governance position they cite, as decision_lineage's, and a canary's
--   previous_version the version active beside it there. A version with no version before it
--   (a policy's first active or canary version) has nothing to compare with: no rows.
-- param: policy VARCHAR the policy name
-- param: version BIGINT the version whose decisions are examined
-- known: policy policy_log.policy
-- known: version policy_log.version
WITH first_active AS (
    SELECT min(valid_from) AS at FROM policy_timeline
    WHERE policy = $policy AND version = $version AND stage = 'active'
),
before AS (  -- the version active just before `version` first became active
    SELECT t.version FROM policy_timeline t, first_active f
    WHERE t.policy = $policy AND t.stage = 'active' AND t.version <> $version
      AND t.valid_from < f.at AND (t.valid_to IS NULL OR t.valid_to >= f.at)
    ORDER BY t.valid_from DESC LIMIT 1
),
log_position AS (  -- "<topic>/<partition>" of the policy's log, as decisions cite it
    SELECT any_value(position) AS position FROM policy_timeline WHERE policy = $policy
),
cited AS (
    SELECT d.*,
           TRY_CAST(d.governance_position->>('$."' || l.position || '"') AS BIGINT) AS cited
    FROM all_decisions d, log_position l
    WHERE d.policy = $policy AND d.policy_version = $version
),
made AS (  -- each decision with its stage (an item records none: its version's then) and the
           -- version active then, placed by the governance position it cites (its time when
           -- it cites none): an evaluator applies a change milliseconds after it is recorded
    SELECT d.*,
           coalesce(d.policy_stage,
                    (SELECT t.stage FROM policy_timeline t
                     WHERE t.policy = $policy AND t.version = $version
                       AND t.stage IN ('active', 'canary')
                       AND CASE WHEN d.cited IS NULL
                                THEN t.valid_from <= d.decided_at
                                     AND (t.valid_to IS NULL OR d.decided_at < t.valid_to)
                                ELSE t.from_offset <= d.cited
                                     AND (t.to_offset IS NULL OR d.cited < t.to_offset) END
                     ORDER BY t.valid_from DESC LIMIT 1)) AS stage_then,
           (SELECT t.version FROM policy_timeline t
            WHERE t.policy = $policy AND t.stage = 'active' AND t.version <> $version
              AND CASE WHEN d.cited IS NULL
                       THEN t.valid_from <= d.decided_at
                            AND (t.valid_to IS NULL OR d.decided_at < t.valid_to)
                       ELSE t.from_offset <= d.cited
                            AND (t.to_offset IS NULL OR d.cited < t.to_offset) END
            ORDER BY t.valid_from DESC LIMIT 1) AS active_then
    FROM cited d
),
said AS (  -- the previous version's recorded answer, per decision
    SELECT d.decision_id, s.version AS previous_version, s.determination, s.rule,
           s.constraints, s.differs,
           row_number() OVER (PARTITION BY d.decision_id
                              ORDER BY (s.stage = 'active') DESC, s.version DESC) AS pick
    FROM made d JOIN shadow_results s ON s.decision_id = d.decision_id
    WHERE d.kind = 'decision' AND s.policy = $policy AND s.version <> $version
      AND ((d.policy_stage = 'canary' AND s.stage = 'active')
           OR s.version = (SELECT version FROM before))
)
SELECT * FROM (
SELECT d.decision_id, d.request_id, d.decided_at, d.principal, d.action, d.resource,
       d.stage_then AS policy_stage, d.determination, d.rule, d.constraints,
       COALESCE(s.previous_version,
                CASE WHEN d.stage_then = 'canary' THEN d.active_then
                     ELSE (SELECT version FROM before) END) AS previous_version,
       s.determination AS previous_determination, s.rule AS previous_rule,
       s.constraints AS previous_constraints,
       CASE WHEN s.decision_id IS NOT NULL THEN s.differs IS NOT NULL END AS flipped,
       s.differs,
       d.kind, d.batch_id, d.item_index, d.item_id
FROM made d LEFT JOIN (SELECT * FROM said WHERE pick = 1) s
  ON s.decision_id = d.decision_id AND d.kind = 'decision'
WHERE s.decision_id IS NULL OR s.differs IS NOT NULL
)
WHERE previous_version IS NOT NULL  -- a first version: no version before it to recall against
ORDER BY decided_at, decision_id, item_index;

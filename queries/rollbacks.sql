-- question: Every rollback: which policy, when, by whom and why; the version it left active
--   (to_version; from_version is the one active before it, the same when the rollback only
--   ended a canary); and each version it took out of service (rolled_back_version, with the
--   stage it had then, its canary percent, and since when), with how many decisions that
--   version made in that stage, from in_that_stage_since up to the rollback
--   (decisions_in_rolled_back_stage), and in all its stages up to the rollback
--   (decisions_in_all_stages: a canary's decisions too, for a version rolled back once
--   active); single decisions and pre-evaluation items, each item counting once (an item
--   records no stage: it counts in the stage its version held when it was decided).
--   A rollback that ended nothing has one row, rolled_back_version NULL. A decision is placed
--   by the governance position it cites (before the rollback: below the rollback's offset),
--   not its time: an evaluator applies a rollback milliseconds after it is recorded (a decision
--   recorded without a position, by an evaluator older than the field, is placed by time).
WITH r AS (
    SELECT sequence, occurred_at, policy, from_version, to_version, actor, reason,
           '$."' || topic || '/' || partition || '"' AS cited_path, "offset" AS at_offset
    FROM policy_log
    WHERE event_type = 'PolicyRolledBack'
),
ended AS (  -- the versions each rollback superseded, and the stage each was in until then
    -- (sequences count per policy: a rollback is its policy and its sequence)
    SELECT r.policy, r.sequence AS rollback_seq, t.version, t.stage, t.percent, t.valid_from,
           t.from_offset
    FROM r
    JOIN policy_timeline s
      ON s.policy = r.policy AND s.sequence = r.sequence AND s.change = 'PolicyRolledBack'
     AND s.stage = 'superseded'
    JOIN policy_timeline t
      ON t.policy = r.policy AND t.version = s.version AND t.sequence < r.sequence
     AND t.stage IN ('active', 'canary')
    QUALIFY row_number() OVER (
        PARTITION BY r.policy, r.sequence, s.version ORDER BY t.sequence DESC
    ) = 1
)
SELECT r.occurred_at AS rolled_back_at, r.policy, r.from_version, r.to_version, r.actor AS by,
       r.reason, e.version AS rolled_back_version, e.stage AS rolled_back_stage,
       e.percent AS canary_percent, e.valid_from AS in_that_stage_since,
       (SELECT count(*) FROM all_decisions d
        WHERE d.policy = r.policy AND d.policy_version = e.version
          AND coalesce(d.policy_stage, e.stage) = e.stage
          AND CASE WHEN TRY_CAST(d.governance_position->>r.cited_path AS BIGINT) IS NULL
                   THEN d.decided_at >= e.valid_from AND d.decided_at <= r.occurred_at
                   ELSE TRY_CAST(d.governance_position->>r.cited_path AS BIGINT)
                        BETWEEN e.from_offset AND r.at_offset - 1 END)
           AS decisions_in_rolled_back_stage,
       (SELECT count(*) FROM all_decisions d
        WHERE d.policy = r.policy AND d.policy_version = e.version
          AND CASE WHEN TRY_CAST(d.governance_position->>r.cited_path AS BIGINT) IS NULL
                   THEN d.decided_at <= r.occurred_at
                   ELSE TRY_CAST(d.governance_position->>r.cited_path AS BIGINT) < r.at_offset
              END) AS decisions_in_all_stages
FROM r
LEFT JOIN ended e ON e.policy = r.policy AND e.rollback_seq = r.sequence
ORDER BY r.occurred_at, r.policy, r.sequence, e.version;

-- Views over a ledger export (`ledger export --out DIR`), for DuckDB.
--
-- ledger.audit.connect(DIR) (and `ledger audit …`) first defines one base view per topic over
-- the Parquet files the export's manifest lists: topic_commands, topic_command_results,
-- topic_policy_events, topic_grant_events, topic_evaluation_requests, topic_decisions,
-- topic_corrections, topic_dead_letters, topic_chain_checkpoints. Their columns are the export format's: the Kafka
-- coordinates (topic, partition, "offset", kafka_timestamp, key), event_type, the raw record
-- bytes (record) and one column per event field (nested values as JSON). This file defines the
-- analysts' views over them. Every time is a TIMESTAMPTZ in UTC.
--
-- Point-in-time views (policy_timeline, grant_history, role_history) follow the governance log
-- as the ledger's one writer appends it: per aggregate, sequence 1, 2, 3 … in log order. Like
-- replay's fold, they keep the first record of each sequence number and stop at a gap. An
-- event applies from its occurred_at on: a state holds from (inclusive) until (exclusive).

-- ------------------------------------------------------------------------------ governance

-- Every policy lifecycle event, in the order the ledger applied them.
CREATE OR REPLACE VIEW policy_events AS
SELECT * FROM topic_policy_events
WHERE event_type IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY policy, sequence ORDER BY partition, "offset") = 1;

-- The applied policy log: duplicates dropped, nothing after a gap in a policy's sequence.
CREATE OR REPLACE VIEW policy_log AS
SELECT * FROM policy_events
QUALIFY sequence = row_number() OVER (PARTITION BY policy ORDER BY sequence);

-- Every grant and role event, in the order the ledger applied them.
CREATE OR REPLACE VIEW grant_events AS
SELECT * FROM topic_grant_events
WHERE event_type IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY principal, sequence ORDER BY partition, "offset") = 1;

CREATE OR REPLACE VIEW grant_log AS
SELECT * FROM grant_events
QUALIFY sequence = row_number() OVER (PARTITION BY principal ORDER BY sequence);

-- policy_timeline: one row per interval in which a version held a stage.
--   policy, version, stage (draft, approved, shadow, canary, active, superseded, retired),
--   percent (canary only), valid_from, valid_to (NULL: still holds), changed_by (who made it
--   so), change (the event type), sequence (of that event), reason (rollback/retire reason or
--   note); position ("<topic>/<partition>" of the policy's log) and from_offset, to_offset
--   (NULL: still holds): the interval by governance position, as a decision's
--   governance_position cites it (from_offset <= cited < to_offset). Ask those, not the time,
--   which interval a decision fell in: an evaluator applies a change milliseconds after it is
--   recorded.
-- A version's stage is set by its proposal (draft), its promotions and a rollback to it; between
-- two of those at most one other event changes it: an approval (draft -> approved), another
-- version's promotion to its stage or a rollback (active/canary -> superseded), a retirement
-- (shadow/canary/active -> retired). That is the core's fold, version by version. A rollback to
-- the version already active (from_version = to_version: it ends a canary) leaves that
-- version's active interval whole.
CREATE OR REPLACE VIEW policy_timeline AS
WITH ev AS (
    SELECT policy, sequence, event_type, version, stage, percent, from_version, to_version,
           actor, occurred_at, coalesce(reason, note) AS why,
           topic || '/' || partition AS position, "offset"
    FROM policy_log
),
proposals AS (
    SELECT policy, version, sequence AS proposed_seq FROM ev
    WHERE event_type = 'PolicyVersionProposed'
),
known AS (  -- promotions and rollbacks whose target version exists when they apply
    SELECT e.* FROM ev e JOIN proposals p
      ON p.policy = e.policy
     AND p.version = CASE WHEN e.event_type = 'PolicyRolledBack' THEN e.to_version ELSE e.version END
     AND p.proposed_seq < e.sequence
    WHERE e.event_type = 'PolicyRolledBack'
       OR (e.event_type = 'PolicyVersionPromoted' AND e.stage IN ('shadow', 'canary', 'active'))
),
sets AS (
    SELECT policy, version, sequence, occurred_at, actor, 'draft' AS stage,
           CAST(NULL AS BIGINT) AS percent, event_type, why, position, "offset"
    FROM ev WHERE event_type = 'PolicyVersionProposed'
    UNION ALL
    SELECT policy, version, sequence, occurred_at, actor, stage, percent, event_type, why,
           position, "offset"
    FROM known WHERE event_type = 'PolicyVersionPromoted'
    UNION ALL
    SELECT policy, to_version, sequence, occurred_at, actor, 'active', NULL, event_type, why,
           position, "offset"
    FROM known  -- a rollback that leaves the active version active (it ends a canary) moves it not
    WHERE event_type = 'PolicyRolledBack' AND to_version IS DISTINCT FROM from_version
),
segments AS (
    SELECT *, lead(sequence) OVER w AS next_seq, lead(occurred_at) OVER w AS next_at,
           lead("offset") OVER w AS next_offset
    FROM sets
    WINDOW w AS (PARTITION BY policy, version ORDER BY sequence)
),
changes AS (
    -- The first event that ends the interval, every field of that one event: arg_min_null,
    -- since arg_min skips a NULL value (an auditor's walkthrough: a promotion without a note
    -- ended v1, and the reason of the retirement after it was given as v1's).
    SELECT s.policy, s.version, s.sequence,
           arg_min_null(e.sequence, e.sequence) AS end_seq,
           arg_min_null(e.occurred_at, e.sequence) AS end_at,
           arg_min_null(e.actor, e.sequence) AS end_actor,
           arg_min_null(e.event_type, e.sequence) AS end_type,
           arg_min_null(e.why, e.sequence) AS end_why,
           arg_min_null(e."offset", e.sequence) AS end_offset
    FROM segments s
    JOIN (SELECT * FROM ev WHERE event_type IN ('PolicyVersionApproved', 'PolicyRetired')
          UNION ALL SELECT * FROM known) e
      ON e.policy = s.policy AND e.sequence > s.sequence
     AND (s.next_seq IS NULL OR e.sequence < s.next_seq)
    WHERE (s.stage = 'draft' AND e.event_type = 'PolicyVersionApproved' AND e.version = s.version)
       OR (s.stage IN ('shadow', 'canary', 'active') AND e.event_type = 'PolicyRetired')
       OR (s.stage = 'active' AND e.event_type = 'PolicyVersionPromoted' AND e.stage = 'active')
       OR (s.stage = 'canary' AND e.event_type = 'PolicyVersionPromoted' AND e.stage = 'canary')
       OR (s.stage = 'canary' AND e.event_type = 'PolicyRolledBack')
       OR (s.stage = 'active' AND e.event_type = 'PolicyRolledBack'
           AND e.to_version IS DISTINCT FROM e.from_version)
    GROUP BY s.policy, s.version, s.sequence
),
intervals AS (
    SELECT s.policy, s.version, s.stage, s.percent, s.occurred_at AS valid_from,
           coalesce(c.end_at, s.next_at) AS valid_to, s.actor AS changed_by,
           s.event_type AS change, s.sequence, s.why AS reason, s.position,
           s."offset" AS from_offset, coalesce(c.end_offset, s.next_offset) AS to_offset
    FROM segments s LEFT JOIN changes c USING (policy, version, sequence)
    UNION ALL
    SELECT s.policy, s.version,
           CASE WHEN c.end_type = 'PolicyVersionApproved' THEN 'approved'
                WHEN c.end_type = 'PolicyRetired' THEN 'retired'
                ELSE 'superseded' END,
           NULL, c.end_at, s.next_at, c.end_actor, c.end_type, c.end_seq, c.end_why,
           s.position, c.end_offset, s.next_offset
    FROM segments s JOIN changes c USING (policy, version, sequence)
)
SELECT policy, version, stage, percent, valid_from, valid_to, changed_by, change, sequence,
       reason, position, from_offset, to_offset
FROM intervals
-- An empty interval is left out by its offsets (the log's order), not its times: a command
-- processor's clock stepped back would stamp a rollback before the promotion it ends, and the
-- canary between them was dropped (a review).
WHERE to_offset IS NULL OR from_offset < to_offset
   OR (from_offset IS NULL AND (valid_to IS NULL OR valid_from < valid_to));

-- Every grant ever issued, with when it stopped being held (revoked_at NULL: still held).
-- Being held is not being in force: a grant is in force at T when it is held at T and
-- valid_from <= T < valid_until (either bound may be NULL: open).
CREATE OR REPLACE VIEW grant_history AS
WITH ev AS (
    SELECT *, lead(event_type) OVER w AS next_type, lead(occurred_at) OVER w AS next_at,
           lead(actor) OVER w AS next_actor, lead(reason) OVER w AS next_reason
    FROM grant_log
    WHERE event_type IN ('GrantIssued', 'GrantRevoked')
    WINDOW w AS (PARTITION BY principal, grant_id ORDER BY sequence)
)
SELECT grant_id, principal, actions, resource, condition, valid_from, valid_until,
       actor AS granted_by, approved_by, note, occurred_at AS issued_at, sequence,
       CASE WHEN next_type IS NOT NULL THEN next_at END AS revoked_at,
       CASE WHEN next_type = 'GrantRevoked' THEN next_actor END AS revoked_by,
       CASE WHEN next_type = 'GrantRevoked' THEN next_reason END AS revoke_reason
FROM ev WHERE event_type = 'GrantIssued';

-- Every role membership: who held which role from when until when (NULL: still holds).
CREATE OR REPLACE VIEW role_history AS
WITH ev AS (
    SELECT *, lead(event_type) OVER w AS next_type, lead(occurred_at) OVER w AS next_at,
           lead(actor) OVER w AS next_actor
    FROM grant_log
    WHERE event_type IN ('RoleAssigned', 'RoleRevoked')
    WINDOW w AS (PARTITION BY principal, role ORDER BY sequence)
)
SELECT principal, role, occurred_at AS assigned_at, actor AS assigned_by,
       CASE WHEN next_type IS NOT NULL THEN next_at END AS revoked_at,
       CASE WHEN next_type IS NOT NULL THEN next_actor END AS revoked_by
FROM ev WHERE event_type = 'RoleAssigned';

-- ------------------------------------------------------------------------------ commands

-- Command answers: accepted (with the events it produced) or rejected (code, reason).
CREATE OR REPLACE VIEW command_results AS
SELECT event_id AS result_id, occurred_at AS answered_at, command_id, command_type, aggregate,
       event_type = 'CommandAccepted' AS accepted, code, reason, event_ids, version, message,
       topic, partition, "offset"
FROM topic_command_results WHERE event_type IS NOT NULL;

-- Every governance command as sent, with its answer (accepted NULL: no answer recorded).
CREATE OR REPLACE VIEW commands AS
SELECT c.event_id AS command_id, c.event_type AS command_type, c.occurred_at AS sent_at, c.*,
       r.accepted, r.code AS rejection_code, r.reason AS rejection_reason, r.answered_at
FROM topic_commands c
LEFT JOIN (SELECT * FROM command_results
           QUALIFY row_number() OVER (PARTITION BY command_id ORDER BY answered_at) = 1) r
  ON r.command_id = c.event_id;

-- ------------------------------------------------------------------------------ evaluation

-- Evaluation requests (single and pre-evaluation batches: items is NULL for a single one).
CREATE OR REPLACE VIEW evaluation_requests AS
SELECT event_id AS request_id, occurred_at AS requested_at, event_type = 'BatchEvaluationRequested'
       AS batch, * EXCLUDE (event_id, occurred_at)
FROM topic_evaluation_requests WHERE event_id IS NOT NULL;  -- not a misplaced event (its NULLs)

-- Decision traces (DecisionRecorded): one row per decision. A pre-evaluation batch is one
-- BatchDecisionRecorded: its items are in batch_decisions; all_decisions holds both.
CREATE OR REPLACE VIEW decisions AS
SELECT event_id AS decision_id, request_id, occurred_at AS decided_at, requested_at, action,
       principal, resource, determination, reason_code, rule, policy, policy_version,
       stage AS policy_stage, content_hash, grant_id, facts, context, constraints, reasons,
       shadow_results, bucket, mode, "default", evaluator_id, latency_us, governance_position,
       requested_by, chain_id, chain_seq, prev_hash, hash, actor, topic, partition, "offset",
       kafka_timestamp, key, record
FROM topic_decisions WHERE event_type = 'DecisionRecorded';

-- Pre-evaluation answers (BatchDecisionRecorded): one row per item. decision_id and request_id
-- are the batch's (its record's event id, the batch request's id); item_index is the item's
-- place in the record's `decisions` list, from 0 (decisions->item_index).
CREATE OR REPLACE VIEW batch_decisions AS
SELECT event_id AS decision_id, request_id, occurred_at AS decided_at, principal,
       item->>'item_id' AS item_id, item->>'action' AS action, item->>'resource' AS resource,
       item->>'determination' AS determination, item->>'reason_code' AS reason_code,
       item->>'rule' AS rule, item->>'policy' AS policy,
       CAST(item->>'policy_version' AS BIGINT) AS policy_version, item->>'grant_id' AS grant_id,
       item->'constraints' AS constraints, governance_position, topic, partition, "offset",
       item_index, evaluator_id
FROM (SELECT *, unnest(CAST(decisions AS JSON[])) AS item,
             generate_subscripts(CAST(decisions AS JSON[]), 1) - 1 AS item_index
      FROM topic_decisions WHERE event_type = 'BatchDecisionRecorded');

-- Every determination an evaluator recorded: one row per decision trace (kind 'decision') and
-- one per pre-evaluation item (kind 'batch_item'), so that a question about decisions counts
-- both. An item's decision_id and request_id are its batch's, batch_id is its batch's decision
-- id (NULL for a decision) and item_index / item_id say which item it is. A batch records no
-- stage and no shadow results: policy_stage and shadow_results are NULL for an item.
CREATE OR REPLACE VIEW all_decisions AS
SELECT decision_id, request_id, decided_at, principal, action, resource, determination,
       reason_code, rule, policy, policy_version, policy_stage, grant_id, constraints,
       shadow_results, governance_position, evaluator_id, 'decision' AS kind,
       CAST(NULL AS VARCHAR) AS batch_id, CAST(NULL AS BIGINT) AS item_index,
       CAST(NULL AS VARCHAR) AS item_id, topic, partition, "offset"
FROM decisions
UNION ALL
SELECT decision_id, request_id, decided_at, principal, action, resource, determination,
       reason_code, rule, policy, policy_version, NULL, grant_id, constraints, NULL,
       governance_position, evaluator_id, 'batch_item', decision_id, item_index, item_id, topic,
       partition, "offset"
FROM batch_decisions;

-- Constraints as values, to compare two answers' (ledger.core.disagreement.same_constraints): a
-- sorted list of (name, value), a number by its value (1 and 1.0 alike), a bool, text or a
-- list as its JSON; NULL (none recorded) as no constraints. A Decimal constraint is text in an
-- export (its digits): 500.0 and 500.00 differ here, though not to `ledger decisions`.
CREATE OR REPLACE MACRO constraint_values(j) AS list_sort(list_transform(
    map_entries(CAST(coalesce(CAST(j AS JSON), CAST('{}' AS JSON)) AS MAP(VARCHAR, JSON))),
    lambda e: {'name': e.key, 'value': CASE
        WHEN json_type(e.value) IN ('BIGINT', 'UBIGINT')
            THEN CAST(CAST(e.value AS HUGEINT) AS VARCHAR)
        WHEN json_type(e.value) = 'DOUBLE'
             AND CAST(e.value AS DOUBLE) = trunc(CAST(e.value AS DOUBLE))
             AND abs(CAST(e.value AS DOUBLE)) < 1e38
            THEN CAST(CAST(CAST(e.value AS DOUBLE) AS HUGEINT) AS VARCHAR)
        WHEN json_type(e.value) = 'DOUBLE' THEN CAST(CAST(e.value AS DOUBLE) AS VARCHAR)
        ELSE coalesce(CAST(e.value AS VARCHAR), 'null') END}));

-- What the non-deciding versions said, one row per shadow result of a decision, beside what
-- the decision said (decided, decided_rule, decided_constraints). differs: how the answers
-- differ, as ledger.core.disagreement.difference says: 'determination', else 'constraints' (the
-- same determination with other constraint values), NULL: the same answer.
CREATE OR REPLACE VIEW shadow_results AS
SELECT *, CASE WHEN determination IS DISTINCT FROM decided THEN 'determination'
               WHEN constraint_values(constraints)
                    IS DISTINCT FROM constraint_values(decided_constraints) THEN 'constraints'
          END AS differs
FROM (
    SELECT decision_id, decided_at, request_id, action, principal, resource,
           policy AS decided_policy, policy_version AS decided_version, determination AS decided,
           rule AS decided_rule, constraints AS decided_constraints, s->>'policy' AS policy,
           CAST(s->>'version' AS BIGINT) AS version, s->>'stage' AS stage,
           s->>'determination' AS determination, s->>'rule' AS rule,
           s->'constraints' AS constraints
    FROM (SELECT *, unnest(CAST(shadow_results AS JSON[])) AS s FROM decisions
          WHERE shadow_results IS NOT NULL AND shadow_results <> '[]')
);

-- Async corrections: the decision differed from the default the caller proceeded on; constraints
-- are the decision's (NULL in files exported before corrections carried them).
CREATE OR REPLACE VIEW corrections AS
SELECT event_id AS correction_id, occurred_at AS corrected_at, request_id, decision_id,
       "default", determination, reasons, constraints, actor, topic, partition, "offset"
FROM topic_corrections WHERE event_type IS NOT NULL;

-- Records a processor could not decode or handle, with where they came from.
CREATE OR REPLACE VIEW dead_letters AS
SELECT event_id AS letter_id, occurred_at, actor, source_topic,
       event_partition AS source_partition, event_offset AS source_offset, code, reason,
       truncated, value_size, value_sha256, event_key AS source_key,
       TRY(decode(event_key)) AS source_key_text,  -- the key as text (NULL: not UTF-8)
       value AS source_value,
       topic, partition, "offset"
FROM topic_dead_letters WHERE event_id IS NOT NULL;

-- The heads of the evaluators' decision hash chains (`ledger audit verify` checks them).
CREATE OR REPLACE VIEW chain_checkpoints AS
SELECT event_id AS checkpoint_id, occurred_at AS checkpointed_at, chain_id, chain_seq, head_hash,
       evaluator_id, final, topic, partition, "offset"
FROM topic_chain_checkpoints WHERE event_type IS NOT NULL;

-- Every record of every topic that did not decode (event_type NULL), kept with its bytes.
CREATE OR REPLACE VIEW undecodable_records AS
SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_commands WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_command_results WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_policy_events WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_grant_events WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_evaluation_requests WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_decisions WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_corrections WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_dead_letters WHERE event_type IS NULL
UNION ALL SELECT topic, partition, "offset", kafka_timestamp, key, record FROM topic_chain_checkpoints WHERE event_type IS NULL;

-- question: Which governance events did the command processor say it wrote that the export does
--   not hold? An accepted command's answer (`command_results`, `event_ids`) names the policy and
--   grant events it produced, and the processor writes those events, and waits for the broker
--   to take them, before it writes the answer; an export reads the answers' topic before the
--   governance topics. So every event an exported accepted answer names must be in the export,
--   already-applied answers included (they name the events first written). A row here means a
--   policy or grant event deleted, most likely the newest with the manifest's offsets lowered to
--   hide it, which no decision cites yet (`governance_cited_missing` finds only those a decision
--   cites; `audit verify` reports either as missing), or an export still being written by
--   `--follow`, whose governance files may trail its answers by one flush (export again, then
--   re-run). One row per answer: the command, when it was answered, how many of its events are
--   missing and the first of them. No rows: every event an accepted answer names is there.
WITH named AS (
    SELECT result_id, command_id, command_type, aggregate, answered_at, topic, partition,
           "offset", unnest(ids) AS event_id, generate_subscripts(ids, 1) AS place
    FROM (SELECT *, TRY_CAST(event_ids AS VARCHAR[]) AS ids FROM command_results WHERE accepted)
),
held AS (
    SELECT event_id FROM topic_policy_events WHERE event_id IS NOT NULL
    UNION
    SELECT event_id FROM topic_grant_events WHERE event_id IS NOT NULL
)
SELECT n.result_id, n.command_id, n.command_type, n.aggregate, n.answered_at,
       count(*) AS events_missing, arg_min(n.event_id, n.place) AS first_missing_event,
       n.topic, n.partition, n."offset"
FROM named n
WHERE n.event_id NOT IN (SELECT event_id FROM held)
GROUP BY ALL
ORDER BY n.answered_at, n.topic, n.partition, n."offset";

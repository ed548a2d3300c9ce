-- question: Which evaluation requests received before `before` has no evaluator answered? A
--   request (one that decodes) is answered by a decision naming it (request_id, a batch's
--   too) or by a dead letter naming its topic, partition and offset (undecodable facts, an id
--   over its limit, an answer no record could hold). A row here means decisions deleted from
--   the export, or never made: an evaluator down (`ledger ps`), or one still catching up. Give
--   `before` a minute or more before the export read the topics (`ledger audit verify` does),
--   since the newest requests may not be answered yet. One row per request partition: how
--   many are unanswered, the first of them (its id, offset and time) and the time of the last.
--   No rows: every request received before `before` is answered.
-- param: before TIMESTAMPTZ only requests the broker received before this instant
SELECT r.topic, r.partition, count(*) AS unanswered,
       arg_min(r.request_id, r."offset") AS first_request, min(r."offset") AS first_offset,
       min(r.kafka_timestamp) AS first_received, max(r.kafka_timestamp) AS last_received
FROM evaluation_requests r
WHERE r.kafka_timestamp < $before
  AND NOT EXISTS (
      SELECT 1 FROM topic_decisions d
      WHERE d.request_id = r.request_id
        AND d.event_type IN ('DecisionRecorded', 'BatchDecisionRecorded'))
  AND NOT EXISTS (
      SELECT 1 FROM dead_letters l
      WHERE l.source_topic = r.topic AND l.source_partition = r.partition
        AND l.source_offset = r."offset")
GROUP BY r.topic, r.partition
ORDER BY r.topic, r.partition;

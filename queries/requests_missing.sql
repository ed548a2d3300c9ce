-- question: Which decisions answer a request the export does not hold? Every decision answers
--   a request an agent wrote before it (`request_id`, a batch's too), and an export reads the
--   decisions before the requests, so each one's request must be in the export. A row here
--   means requests deleted from the export (their files, manifest entries and offsets: what
--   `replay` and `policy simulate` re-decide from is gone), or deleted by a retention the
--   operator set on ledger.evaluation-requests before the export read them: decisions older
--   than the export's oldest request (by a minute) are therefore not counted, unless it holds
--   no request at all. Give `before` a minute or more before the export read the topics
--   (`ledger audit verify` does). One row per decisions partition: how many, the first of
--   them (its decision and request ids, offset and time). No rows: every request is there.
-- param: before TIMESTAMPTZ only decisions the broker received before this instant
WITH held AS (SELECT request_id, kafka_timestamp FROM evaluation_requests),
oldest AS (SELECT min(kafka_timestamp) AS at FROM held)
SELECT d.topic, d.partition, count(*) AS missing,
       arg_min(d.event_id, d."offset") AS first_decision,
       arg_min(d.request_id, d."offset") AS first_request, min(d."offset") AS first_offset,
       min(d.kafka_timestamp) AS first_received
FROM topic_decisions d, oldest o
WHERE d.event_type IN ('DecisionRecorded', 'BatchDecisionRecorded')
  AND d.kafka_timestamp < $before
  AND (o.at IS NULL OR d.kafka_timestamp >= o.at + INTERVAL 1 MINUTE)
  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.request_id = d.request_id)
GROUP BY d.topic, d.partition
ORDER BY d.topic, d.partition;

-- question: Which asynchronous decisions that differ from their caller's default have no
--   correction? An agent that asked asynchronously acted on its `default` at once; when the
--   decision differs, the evaluator writes a correction (`ledger.corrections`) beside it, and
--   the SDK calls the agent's `on_correction` with it. A row here is an agent that was never
--   told it acted wrongly: the correction deleted from the export (with its file and manifest
--   entry: `audit verify` cannot tell otherwise), or never written: an evaluator stopped
--   between writing the decision and its correction (see the README's Known limits). Give
--   `before` a minute or more before the export read the topics (`ledger audit verify` does):
--   the newest decisions' corrections may be written after the export read that topic. One row
--   per decision, oldest first. No rows: every such decision has its correction. A correction
--   is its decision's when every field it carries is the decision's: its ids come from the
--   request id alone, so a copy sent under the id, decided otherwise, has a correction under
--   the same ids (a red team: it stood for the genuine one, which a crash had left unwritten);
--   its time is its decision's, which no copy shares.
-- param: before TIMESTAMPTZ only decisions the broker received before this instant
SELECT d.decision_id, d.request_id, d.principal, d.action, d.resource, d."default",
       d.determination, d.decided_at, d.topic, d.partition, d."offset"
FROM decisions d
WHERE d.mode = 'async'
  AND d."default" IS NOT NULL
  AND d.determination IS DISTINCT FROM d."default"
  AND d.kafka_timestamp < $before
  AND NOT EXISTS (
      SELECT 1 FROM corrections c
      WHERE c.decision_id = d.decision_id
        AND c.corrected_at = d.decided_at
        AND c."default" = d."default"
        AND c.determination = d.determination
        AND c.reasons::VARCHAR = d.reasons::VARCHAR
        -- a correction written before corrections carried constraints (2026-12-04) has none
        AND (c.constraints IS NULL OR c.constraints::VARCHAR = '{}'
             OR c.constraints::VARCHAR IS NOT DISTINCT FROM d.constraints::VARCHAR))
ORDER BY d.kafka_timestamp, d.topic, d.partition, d."offset";

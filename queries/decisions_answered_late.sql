-- question: Which decisions (pre-evaluation items too: `kind`, `item_id`) were made more
--   than `seconds` seconds after the broker received their request? The SDK waits for an answer at most its timeout (5 s unless the caller set
--   another) and then raises LedgerTimeout: a decision made later answered nobody, and the tool
--   it was asked about did not run because of it, yet it counts in every other query as a real
--   allow or deny (an auditor's walkthrough: 4 requests sent while the evaluator was down were
--   decided 80 s later, allow_with_constraints). The request does not record its caller's
--   timeout, so pick `seconds` as your agents' longest (5 by default). `late_by` is the
--   evaluator's clock (decided_at) less the broker's (the request's kafka_timestamp): a skewed
--   evaluator clock shifts it (README, Known limits). No rows: every decision came within it.
-- param: seconds BIGINT how many seconds after its request a decision counts as late
SELECT d.decision_id, d.kind, d.item_id, d.request_id, d.principal, d.action, d.determination,
       d.policy, d.policy_version, r.kafka_timestamp AS received_at, d.decided_at,
       round(epoch(d.decided_at) - epoch(r.kafka_timestamp), 3) AS late_by_seconds
FROM all_decisions d
JOIN evaluation_requests r ON r.request_id = d.request_id
WHERE epoch(d.decided_at) - epoch(r.kafka_timestamp) > $seconds
ORDER BY d.decided_at, d.item_index;

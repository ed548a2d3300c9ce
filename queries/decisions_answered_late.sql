-- question: Which decisions (pre-evaluation items too: `kind`, `item_id`) were made more
--   than `seconds` seconds after their request? What that meant depends on how it was asked
--   (`mode`). A sync request (`mode` sync; a pre-evaluation item, whose `mode` is NULL, waited
--   too) waits for its answer at most its timeout (5 s unless the caller set another), then
--   raises LedgerTimeout: a decision made later answered nobody, and a guarded tool did not run
--   on it, yet it counts in every other query as a real allow or deny (an auditor's walkthrough:
--   4 requests sent while the evaluator was down were decided 80 s later). An async request
--   (`submit_async`, `mode` async) waits for nothing: the agent went on at once as if its
--   `default` were the answer (its tool may have run on an allow), and the decision, late or
--   not, says whether that was right: `corrected` true means the decision differed from the
--   default and a correction was issued (the agent acted on the wrong answer and was told so
--   when it read corrections); false, the default was the decision (NULL for sync and items).
--   Which time: `late_by_seconds` is the decision's own `decided_at` (the evaluator's clock)
--   less its `requested_at` (the sender's clock as it made the call, the moment its timeout
--   counts from), both covered by the decision's hash chain (`ledger audit verify`); an item's
--   batch records no `requested_at`, so an item's is its request's `requested_at`, which no
--   chain covers. `received_late_by_seconds` is `decided_at` less the broker's receipt of the
--   request (`received_at`, its kafka_timestamp), a column verify does not check. A decision is
--   listed when either is over `seconds`; `times_disagree` is true when only one is: a sender's
--   or the evaluator's clock off (README, Known limits), a request the client held while the
--   broker was away (received late, so only `late_by_seconds` is over), or a request's
--   kafka_timestamp changed in the export (only `late_by_seconds` is over). The request does not
--   record its caller's timeout, so pick `seconds` as your agents' longest (5 by default). No
--   rows: every decision came within it.
-- param: seconds BIGINT how many seconds after its request a decision counts as late
WITH timed AS (
    SELECT d.decision_id, d.kind, d.item_id, d.request_id, d.principal, d.action,
           d.determination, d.policy, d.policy_version, c.mode, c."default",
           coalesce(c.requested_at, r.requested_at) AS requested_at,
           r.kafka_timestamp AS received_at, d.decided_at, d.item_index,
           CASE WHEN c.mode = 'async' THEN EXISTS (
               SELECT 1 FROM corrections k WHERE k.decision_id = d.decision_id) END AS corrected,
           round(epoch(d.decided_at) - epoch(coalesce(c.requested_at, r.requested_at)), 3)
               AS late_by_seconds,
           round(epoch(d.decided_at) - epoch(r.kafka_timestamp), 3) AS received_late_by_seconds
    FROM all_decisions d
    LEFT JOIN decisions c ON c.decision_id = d.decision_id AND d.kind = 'decision'
    LEFT JOIN evaluation_requests r ON r.request_id = d.request_id
)
SELECT decision_id, kind, item_id, request_id, principal, action, determination, policy,
       policy_version, mode, "default", corrected, requested_at, received_at, decided_at,
       late_by_seconds, received_late_by_seconds,
       CASE WHEN received_late_by_seconds IS NOT NULL
            THEN (late_by_seconds > $seconds) IS DISTINCT FROM (received_late_by_seconds > $seconds)
       END AS times_disagree
FROM timed
WHERE late_by_seconds > $seconds OR received_late_by_seconds > $seconds
ORDER BY decided_at, item_index;

-- question: Which request ids were decided more than once? Each request id is answered once; a
--   second answer means a request was sent again under an id already answered, to an
--   evaluator worker that had not seen it: a client's own retry, or someone holding the agent
--   credential re-sending another agent's request with facts of their choosing (the SDK
--   delivers only the first answer it reads). One row per answer of such an id, first answer
--   first;
--   `differs` says whether it answered another question (principal, action, resource or
--   facts) or another determination than the first; for a pre-evaluation, which records its
--   items' names and answers but not their facts, whether any item was named or answered
--   otherwise (a copy with other facts shows there).
WITH answers AS (
    SELECT request_id, event_id AS decision_id, occurred_at AS decided_at, event_type, principal,
           action, resource, determination, facts, decisions, requested_by, evaluator_id,
           chain_id,
           partition, "offset",
           count(*) OVER (PARTITION BY request_id) AS answers,
           -- by the writers' clocks: answers on other partitions have no order but time (a
           -- client reads one reply partition, in offset order; `partition`, `offset` show it)
           row_number() OVER (PARTITION BY request_id ORDER BY occurred_at, partition, "offset")
               AS answer
    FROM topic_decisions
    WHERE event_type IN ('DecisionRecorded', 'BatchDecisionRecorded')
)
SELECT request_id, answer, answers, decision_id, decided_at, event_type, principal, action,
       resource, determination, requested_by, evaluator_id, chain_id, partition, "offset",
       answer > 1 AND (
           principal IS DISTINCT FROM first_value(principal) OVER w
           OR action IS DISTINCT FROM first_value(action) OVER w
           OR resource IS DISTINCT FROM first_value(resource) OVER w
           OR CAST(facts AS VARCHAR) IS DISTINCT FROM CAST(first_value(facts) OVER w AS VARCHAR)
           OR determination IS DISTINCT FROM first_value(determination) OVER w
           OR CAST(decisions AS VARCHAR)
               IS DISTINCT FROM CAST(first_value(decisions) OVER w AS VARCHAR)
       ) AS differs
FROM answers
WHERE answers > 1
WINDOW w AS (PARTITION BY request_id ORDER BY answer)
ORDER BY request_id, answer;

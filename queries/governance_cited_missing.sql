-- question: Which governance records did decisions apply that the export does not hold? Each
--   decision's governance_position names the last record of each policy and grant partition its
--   evaluator had applied, and the decisions are hash-chained (`ledger audit verify`), so they
--   vouch that those records were written. A row here means the export lacks them: its newest
--   policy or grant events deleted, with the manifest's offsets rewritten to hide the gap (which
--   `audit verify` reports, by this query, as missing), or an export still being written by
--   `--follow`, whose governance files may trail its decisions by one flush (export again, then
--   re-run). One row per governance partition: the highest offset decisions cite, the highest
--   the export holds, how many decisions cite beyond it and the first of them. No rows: every
--   governance record a decision applied is in the export.
WITH cited AS (
    SELECT p.key AS position, CAST(p.value AS BIGINT) AS cited_offset, d.event_id, d.occurred_at
    FROM topic_decisions d, json_each(d.governance_position) p
    WHERE d.event_type IN ('DecisionRecorded', 'BatchDecisionRecorded')
),
held AS (
    SELECT topic || '/' || partition AS position, max("offset") AS held_offset
    FROM topic_policy_events GROUP BY ALL
    UNION ALL
    SELECT topic || '/' || partition, max("offset")
    FROM topic_grant_events GROUP BY ALL
)
SELECT c.position, max(c.cited_offset) AS highest_cited, h.held_offset AS highest_held,
       count(*) FILTER (WHERE c.cited_offset > coalesce(h.held_offset, -1)) AS decisions_beyond,
       arg_min(c.event_id, c.occurred_at)
           FILTER (WHERE c.cited_offset > coalesce(h.held_offset, -1)) AS first_decision_beyond
FROM cited c
LEFT JOIN held h ON h.position = c.position
GROUP BY c.position, h.held_offset
HAVING max(c.cited_offset) > coalesce(h.held_offset, -1)
ORDER BY c.position;

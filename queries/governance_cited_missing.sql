-- question: Which governance records did decisions apply that the export does not hold? Each
--   decision's governance_position names the last record of each policy and grant partition its
--   evaluator had applied, and the decisions are hash-chained (`ledger audit verify`), so they
--   vouch that those records were written, and every one before them in the log. A row here
--   means the export lacks one of them: a policy or grant event deleted (from the middle of the
--   log, or the newest with the manifest's offsets rewritten to hide the gap; `audit verify`
--   reports either, by this query, as missing), or an export still being written by
--   `--follow`, whose governance files may trail its decisions by one flush (export again, then
--   re-run). One row per governance partition: the highest offset decisions cite, the highest
--   the export holds, the first offset it lacks (`first_missing`), how many decisions cite it
--   or beyond and the first of them. No rows: every governance record a decision applied is in
--   the export.
WITH cited AS (
    SELECT p.key AS position, CAST(p.value AS BIGINT) AS cited_offset, d.event_id, d.occurred_at
    FROM topic_decisions d, json_each(d.governance_position) p
    WHERE d.event_type IN ('DecisionRecorded', 'BatchDecisionRecorded')
),
held_rows AS (
    SELECT topic || '/' || partition AS position, "offset" FROM topic_policy_events
    UNION ALL
    SELECT topic || '/' || partition, "offset" FROM topic_grant_events
),
-- A governance log runs 0, 1, 2 … without a gap (its topics keep every record and are written
-- without transactions), so the first offset the export lacks is 0 when it does not start
-- there, else the first after a held offset that the next held one does not follow.
followed AS (
    SELECT position, "offset",
           lead("offset") OVER (PARTITION BY position ORDER BY "offset") AS next_offset
    FROM held_rows
),
held AS (
    SELECT position, max("offset") AS held_offset,
           CASE WHEN min("offset") > 0 THEN 0
                ELSE min("offset" + 1) FILTER (
                    WHERE next_offset IS NULL OR next_offset > "offset" + 1)
           END AS first_missing
    FROM followed GROUP BY position
)
SELECT c.position, max(c.cited_offset) AS highest_cited, h.held_offset AS highest_held,
       count(*) FILTER (WHERE c.cited_offset >= coalesce(h.first_missing, 0)) AS decisions_beyond,
       arg_min(c.event_id, c.occurred_at)
           FILTER (WHERE c.cited_offset >= coalesce(h.first_missing, 0)) AS first_decision_beyond,
       coalesce(h.first_missing, 0) AS first_missing
FROM cited c
LEFT JOIN held h ON h.position = c.position
GROUP BY c.position, h.held_offset, h.first_missing
HAVING max(c.cited_offset) >= coalesce(h.first_missing, 0)
ORDER BY c.position;

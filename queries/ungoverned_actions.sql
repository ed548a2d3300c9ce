-- question: Which actions did agents ask about that no deployed policy governed (denied with
--   ungoverned_action): how often, by whom, first and last seen. Single requests and
--   pre-evaluation items alike (each item counts as one request).
SELECT action, count(*) AS requests, count(DISTINCT principal) AS principals,
       string_agg(DISTINCT principal, ', ' ORDER BY principal) AS who,
       min(decided_at) AS first_seen, max(decided_at) AS last_seen
FROM all_decisions
WHERE reason_code = 'ungoverned_action'
GROUP BY action
ORDER BY requests DESC, action;

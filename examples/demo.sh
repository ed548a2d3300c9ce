#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: a real Kafka broker, the processors, a policy's whole
# life (propose → approve → canary → active → rollback), an agent asking for decisions, replay,
# and an auditor's export and SQL questions. Each step prints the `ledger` command it runs, so
# this file doubles as a tutorial.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

# A fresh ledger for every demo run; the broker's jars stay cached in ~/.cache/decision-ledger.
export LEDGER_HOME="${DEMO_LEDGER_HOME:-$(mktemp -d -t ledger-demo.XXXXXX)}"
unset LEDGER_BOOTSTRAP LEDGER_TOPIC_PREFIX
trap 'echo; step "ledger down"; ledger down >/dev/null || true' EXIT

bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true)
step() { echo; echo "${bold}\$ $*${plain}"; }
run() { step "$@"; "$@"; }

echo "Decision Ledger demo (state in $LEDGER_HOME)"

run ledger policy validate examples/policies/refund.yaml examples/policies/refund-v2.yaml
run ledger policy test examples/policies/refund.yaml
run ledger policy eval examples/policies/refund.yaml --facts '{"tenure_days": 30, "amount": "600", "prior_refunds_12m": 0, "standing": "good"}'

run ledger up          # a secured broker: one SCRAM credential per role, ACLs; admin's signing key
run ledger broker status
run ledger credentials show agent    # what an agent's Kafka client uses (--json: kafka-python kwargs)

# Every governance command is signed by its actor's key: the administrator registers alice's and
# bob's (their private keys land in $LEDGER_HOME/keys, 0600).
run ledger actor add human:alice --by human:admin
run ledger actor add human:bob --by human:admin
step "ledger grant issue --to agent:mallory --actions '*' --resource '*' --by human:carol   # no key: refused"
ledger grant issue --to agent:mallory --actions '*' --resource '*' --by human:carol || echo "(refused, as it should be)"

# Authority first: alice writes policies, bob approves and deploys them, the agent refunds.
run ledger grant issue --to human:alice --actions 'ledger.policy.propose' --resource 'policy:*' --by human:admin
run ledger grant issue --to role:policy_approver --actions 'ledger.policy.approve,ledger.policy.promote,ledger.policy.rollback' --resource 'policy:*' --by human:admin
run ledger role assign human:bob policy_approver --by human:admin
run ledger grant issue --to agent:refund-bot --actions 'refund.*' --resource 'account:*' --by human:admin

run ledger policy propose examples/policies/refund.yaml --by human:alice --note "first refund policy"
step "ledger policy approve refund 1 --by human:alice   # the author may not approve"
ledger policy approve refund 1 --by human:alice || echo "(rejected, as it should be)"
run ledger policy approve refund 1 --by human:bob
run ledger policy promote refund 1 --to active --by human:bob

FACTS='{"tenure_days": 120, "amount": "300.00", "prior_refunds_12m": 0, "standing": "good"}'
run ledger evaluate --action refund.issue --principal agent:refund-bot --resource account:42 --facts "$FACTS"
run ledger evaluate --action refund.issue --principal agent:intruder --resource account:42 --facts "$FACTS"
run ledger evaluate --action email.send --principal agent:refund-bot --resource customer:42

step "python examples/refund_agent.py"
python examples/refund_agent.py

# Version 2 goes canary at 30 %, then active, then is rolled back.
run ledger policy propose examples/policies/refund-v2.yaml --by human:alice --note "tighten auto-refunds"
run ledger policy diff refund 1 2     # what the approver is asked to approve
run ledger policy approve refund 2 --by human:bob
run ledger policy promote refund 2 --to canary --percent 30 --by human:bob
run ledger policy list
# --replacing / --from name the version you saw: refused if someone changed it meanwhile.
run ledger policy promote refund 2 --to active --replacing 1 --by human:bob
run ledger evaluate --action refund.issue --principal agent:refund-bot --resource account:42 --facts "$FACTS"
BEFORE_ROLLBACK=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
run ledger policy rollback refund --from 2 --by human:bob --reason "v2 refuses too many loyal customers"
run ledger evaluate --action refund.issue --principal agent:refund-bot --resource account:42 --facts "$FACTS"

run ledger policy show refund
run ledger replay --at "$BEFORE_ROLLBACK" --policy refund
run ledger decisions --principal agent:refund-bot --action 'refund.*' --limit 6
run ledger actor list
run ledger actor verify   # every governance event's signature, checked offline

# The auditor: export the ledger to Parquet and question it with DuckDB.
EXPORT="$LEDGER_HOME/export"
run ledger export --out "$EXPORT"
run ledger audit list
# "Which policy governed refund X?" — the last refund decision for account:42 that allowed.
REFUND_ID=$(ledger audit sql "SELECT request_id FROM decisions WHERE resource = 'account:42' AND determination <> 'deny' ORDER BY decided_at DESC LIMIT 1" --from "$EXPORT" --csv | tail -n 1)
run ledger audit run decision_lineage --param "id=$REFUND_ID" --from "$EXPORT"
# "Who approved the version that allowed it?"
run ledger audit run who_approved --param policy=refund --from "$EXPORT"
# "Which policy was active the instant before the rollback?" — SQL and replay agree.
run ledger audit run active_policies_at --param "at=$BEFORE_ROLLBACK" --from "$EXPORT"
run ledger replay --at "$BEFORE_ROLLBACK" --policy refund --from "$EXPORT"
run ledger audit sql "SELECT policy, policy_version, determination, count(*) AS decisions FROM decisions GROUP BY ALL ORDER BY ALL" --from "$EXPORT"
# What v2 would have changed over everything the demo recorded (re-decided with the core,
# nothing written), a reproduction of the last decision at its recorded governance position
# from the export, and the evaluator's decision hash chains checked over the export.
run ledger policy simulate examples/policies/refund-v2.yaml --from "$EXPORT" --sample 5
LAST_DECISION=$(ledger audit sql "SELECT decision_id FROM decisions ORDER BY decided_at DESC LIMIT 1" --from "$EXPORT" --csv | tail -n 1)
run ledger replay --decision "$LAST_DECISION" --from "$EXPORT"
run ledger audit verify --from "$EXPORT"
# Who did what, proven from the export alone: every governance event's signature checked
# against the keys the ledger registered.
run ledger actor verify --from "$EXPORT"
echo; echo "${bold}Demo complete.${plain}"

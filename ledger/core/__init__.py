"""The pure decision core: no Kafka, Faust, DuckDB, files, environment, clock or randomness.

Everything the processors, replay, ``ledger policy test``, simulation and audit need to agree on
lives here, once: the policy model (:mod:`~ledger.core.policy`), CEL conditions
(:mod:`~ledger.core.cel`), facts (:mod:`~ledger.core.facts`), authority
(:mod:`~ledger.core.authority`), state and fold (:mod:`~ledger.core.state`), who governs an
action (:mod:`~ledger.core.governing`), the command
lifecycle (:mod:`~ledger.core.lifecycle`), evaluation (:mod:`~ledger.core.evaluate`), the
evaluator's answer as the record it writes (:mod:`~ledger.core.answering`), the reasons an
earlier release worded otherwise, which reproduction takes for today's
(:mod:`~ledger.core.wordings`), impact simulation (:mod:`~ledger.core.simulate`) and offline
tests (:mod:`~ledger.core.policytests`).
Time and ids are parameters; a denial is a value. The one process-wide effect, pausing the
cyclic garbage collector while a replay folds (a cost, never a result), is written once, in
:mod:`~ledger.core.collector`: the Kafka follower's catch-up and bulk folds pause it through
the same function.
"""

from ledger.core.authority import (
    Grant,
    authorize,
    capabilities,
    effective_grants,
    unauthorized_reason,
    valid_principal,
)
from ledger.core.cel import CompiledCondition, ConditionFault, compile_condition
from ledger.core.evaluate import (
    REASON_CODES,
    correction_for,
    decision_id,
    evaluate,
    evaluate_batch,
)
from ledger.core.facts import FACT_TYPES, FactSpec, validate_facts
from ledger.core.governing import governing_policy
from ledger.core.lifecycle import (
    DEFAULT_ADMINS,
    REJECTION_CODES,
    Rejection,
    command_action,
    command_aggregate,
    command_result,
    decide,
)
from ledger.core.policy import (
    DefaultDecision,
    Effect,
    Policy,
    PolicyOutcome,
    PolicyTestCase,
    Rule,
    parse_policy,
    parse_test_cases,
)
from ledger.core.policytests import CaseResult, run_case, run_policy_tests
from ledger.core.simulate import Change, ImpactReport, simulate
from ledger.core.state import (
    EMPTY_STATE,
    LedgerState,
    PolicyRecord,
    PolicyVersion,
    PrincipalRecord,
    aggregate_of,
    bucket,
    fold,
    replay,
    with_position,
)

__all__ = [
    # policy documents
    "Policy",
    "Rule",
    "DefaultDecision",
    "Effect",
    "PolicyOutcome",
    "PolicyTestCase",
    "parse_policy",
    "parse_test_cases",
    "FactSpec",
    "FACT_TYPES",
    "validate_facts",
    "CompiledCondition",
    "ConditionFault",
    "compile_condition",
    # authority
    "Grant",
    "authorize",
    "unauthorized_reason",
    "capabilities",
    "effective_grants",
    "valid_principal",
    # state
    "LedgerState",
    "PolicyRecord",
    "PolicyVersion",
    "PrincipalRecord",
    "EMPTY_STATE",
    "fold",
    "replay",
    "with_position",
    "aggregate_of",
    "governing_policy",
    # lifecycle
    "decide",
    "Rejection",
    "REJECTION_CODES",
    "DEFAULT_ADMINS",
    "command_aggregate",
    "command_action",
    "command_result",
    # evaluation
    "evaluate",
    "evaluate_batch",
    "correction_for",
    "bucket",
    "decision_id",
    "REASON_CODES",
    # testing and simulation
    "CaseResult",
    "run_case",
    "run_policy_tests",
    "simulate",
    "ImpactReport",
    "Change",
]

"""Human supervision between policy and robot: safety filter -> risk score -> operator decision."""

from vla.supervision.config import (
    EvalAppConfig,
    GateConfig,
    OperatorConfig,
    RiskConfig,
    SafetyConfig,
    SimulatedOperatorConfig,
    TerminalOperatorConfig,
    gate_config,
    register_configs,
)
from vla.supervision.gate import DecisionRecord, GateStats, SupervisionGate, TickResult
from vla.supervision.operators import (
    AutoOperator,
    Decision,
    Operator,
    Proposal,
    SimulatedOperator,
    TickInfo,
    Verdict,
    build_operator,
)
from vla.supervision.risk import RiskEstimator, RiskScore, chunk_inconsistency, resolve_risk_kind, sample_disagreement
from vla.supervision.safety import FilterResult, SafetyFilter

__all__ = [
    "AutoOperator",
    "Decision",
    "DecisionRecord",
    "EvalAppConfig",
    "FilterResult",
    "GateConfig",
    "GateStats",
    "Operator",
    "OperatorConfig",
    "Proposal",
    "RiskConfig",
    "RiskEstimator",
    "RiskScore",
    "SafetyConfig",
    "SafetyFilter",
    "SimulatedOperator",
    "SimulatedOperatorConfig",
    "SupervisionGate",
    "TerminalOperatorConfig",
    "TickInfo",
    "TickResult",
    "Verdict",
    "build_operator",
    "chunk_inconsistency",
    "gate_config",
    "register_configs",
    "resolve_risk_kind",
    "sample_disagreement",
]

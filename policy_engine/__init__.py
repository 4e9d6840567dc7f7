"""Pure device-health policy evaluation: data in, decision out; standard library only."""

from __future__ import annotations

from policy_engine.checks import CompiledCheck
from policy_engine.compile import compile_policy_set, policy_fingerprint, reference_problems
from policy_engine.decision import Decision, Finding, Reason
from policy_engine.defaults import DEFAULT_KEY_BY_FACT, DEFAULT_REMEDIATION
from policy_engine.document import (
    BreakGlassMode,
    BreakGlassSpec,
    CheckSpec,
    ControlRef,
    DeviceRequirement,
    IfUnknown,
    IfUnmeasurable,
    Operator,
    PolicyDocument,
    RemediationSpec,
    Severity,
    TierSpec,
    VersionFloor,
)
from policy_engine.errors import PolicyCompileError, PolicyError, PolicyParseError, Problem
from policy_engine.evaluate import CompiledPolicySet, TierInfo
from policy_engine.facts import BUILTIN_FACTS, FactKind
from policy_engine.memo import DecisionMemo
from policy_engine.model import EMPTY_FACTS, DeviceSnapshot, Fact, OsFamily, Version
from policy_engine.parse import format_duration, parse_duration, parse_policy_document
from policy_engine.remediation import Remediation
from policy_engine.simulate import (
    DeviceRef,
    Explanation,
    Outcome,
    SimulationReport,
    TierSimulation,
    explain,
    outcome_of,
    simulate,
)
from policy_engine.stethoscope import convert_stethoscope_policy

__all__ = [
    "BUILTIN_FACTS",
    "DEFAULT_KEY_BY_FACT",
    "DEFAULT_REMEDIATION",
    "EMPTY_FACTS",
    "BreakGlassMode",
    "BreakGlassSpec",
    "CheckSpec",
    "CompiledCheck",
    "CompiledPolicySet",
    "ControlRef",
    "Decision",
    "DecisionMemo",
    "DeviceRef",
    "DeviceRequirement",
    "DeviceSnapshot",
    "Explanation",
    "Fact",
    "FactKind",
    "Finding",
    "IfUnknown",
    "IfUnmeasurable",
    "Operator",
    "OsFamily",
    "Outcome",
    "PolicyCompileError",
    "PolicyDocument",
    "PolicyError",
    "PolicyParseError",
    "Problem",
    "Reason",
    "Remediation",
    "RemediationSpec",
    "Severity",
    "SimulationReport",
    "TierInfo",
    "TierSimulation",
    "TierSpec",
    "Version",
    "VersionFloor",
    "compile_policy_set",
    "convert_stethoscope_policy",
    "explain",
    "format_duration",
    "outcome_of",
    "parse_duration",
    "parse_policy_document",
    "policy_fingerprint",
    "reference_problems",
    "simulate",
]

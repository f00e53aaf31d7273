"""Safety and utility metrics: rule-based harmless rate, paired harm preference, benign loss."""

from shared.evaluation.metrics import EvalSettings, SafetyReport, evaluate_model
from shared.evaluation.refusal import REFUSAL_MARKERS, is_refusal

__all__ = ["REFUSAL_MARKERS", "EvalSettings", "SafetyReport", "evaluate_model", "is_refusal"]

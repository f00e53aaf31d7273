"""The behavioural audit: what a LoRA update does to the model's safety on a private canary set.

Independent of the data an attacker trained on: the update is applied to the frozen base and the paired
harm preference (compliant minus refusal log-likelihood) is measured on harmful canaries, relative to the
round's global adapter. `canaries` draws the set, `scorer` measures; `shared.calibration` (re-exported
here, the probe uses it too) picks the threshold.
"""

from shared.audit.canaries import CanarySettings, canary_examples, draw_canaries
from shared.audit.scorer import HarmPreferenceAudit, continuation_means, preference_from_log_probs
from shared.calibration import false_positive_rate, threshold_for_fpr

__all__ = [
    "CanarySettings",
    "HarmPreferenceAudit",
    "canary_examples",
    "continuation_means",
    "draw_canaries",
    "false_positive_rate",
    "preference_from_log_probs",
    "threshold_for_fpr",
]

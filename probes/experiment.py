"""Train the probe, calibrate its threshold, and evaluate it on every held-out test set.

Test sets (all on samples no training trajectory saw; see probes/dataset.py):
- `heldout`: held-out trajectories of the training sources, builder settings;
- `unseen_benign_style`: Dolly (a benign source and style the probe never trained on) vs the held-out
  malicious trajectories;
- `client_settings`: trajectories trained with settings the probe never saw (lr ×0.5, ×2, batch 4);
- `unseen_harmful_source:<s>`: a probe trained *without* harmful source s, on s's held-out trajectories vs
  the held-out benign ones (leave-one-source-out: does the probe detect harm or one generator's answers?);
- `unseen_writer:<w>`: a probe trained without writer w's data (both classes: Mistral wrote MaliciousGen and
  helpfulQA, the unaligned SmolLM2 selfgen_harmful and selfgen_benign), tested on w's held-out trajectories —
  with both classes from each writer, style cannot separate them, so this row measures harm, not authorship;
  its false-positive rate on Dolly (a benign writer no probe trained on) is reported beside it;
- `per_step`: the main probe's AUROC at each local step (samples integrated = batch × step), and the AUROC
  of a probe trained on that step alone.
`min_step`: the first local step that integrates `min_samples` samples (16 by default: on SmolLM2 a step of
8 samples separates at AUROC 0.93, every step of >= 16 at 1.00 — the per-step rows); earlier steps carry
too little signal, so the probe is trained and scored from `min_step` on, and the defense levels read it from
the manifest. Calibration: half of each training source's held-out trajectories (seeded) are set aside —
sample-disjoint from training like the test sets, unlike the classifier's validation trajectories, which
share samples with training ones and so score benign updates too low; the threshold is set on their benign
steps for a stated false-positive rate. The test sets exclude the calibration trajectories; the method's
τ = 0.8 stays a reported row. The default false-positive rate is 0.5% of benign steps: the shadow level's
(1 − ρ)^7 makes a single false-positive step cost a benign client most of its weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.classifier import LogisticProbe, ProbeTrainingConfig, predict, train_probe
from probes.dataset import ProbeDataset
from probes.metrics import auroc, detection_metrics
from probes.sources import STYLE_TEST_SOURCES, WRITERS
from shared.calibration import normal_tail_quantile, threshold_for_fpr
from shared.features import FeatureSpec, Normalization, Policy, normalise

VARIANTS: tuple[tuple[Policy, Normalization], ...] = (
    ("first_B", "l2"),
    ("first_B", "none"),
    ("all_layers", "l2"),
    ("module_norms", "center"),
    ("module_norms", "none"),
)
METHOD_TAU = 0.8


@dataclass
class TrainedProbe:
    policy: Policy
    normalize: Normalization
    model: LogisticProbe
    spec: FeatureSpec
    log: dict
    threshold: float
    min_step: int


def calibration_rows(dataset: ProbeDataset, seed: int) -> np.ndarray:
    """Half of each training source's held-out trajectories (seeded): sample-disjoint from training, so the
    threshold and min_step are chosen on data as unseen as the test's (validation trajectories share samples
    with training ones and score benign updates too low). Dolly stays whole: it is the unseen-style test."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(dataset.labels), dtype=bool)
    test = (dataset.role == "test") & ~np.isin(dataset.source, STYLE_TEST_SOURCES)
    for source in sorted(set(dataset.source[test].tolist())):
        ids = np.unique(dataset.trajectory[test & (dataset.source == source)])
        take = rng.permutation(ids)[: len(ids) // 2]
        chosen |= np.isin(dataset.trajectory, take)
    return chosen


def split_masks(dataset: ProbeDataset, min_step: int = 1, seed: int = 2023) -> dict[str, np.ndarray]:
    """Row masks of the training, calibration and test sets, from `min_step` on."""
    late = dataset.step >= min_step
    calibration = calibration_rows(dataset, seed)
    test = (dataset.role == "test") & ~calibration
    style = np.isin(dataset.source, STYLE_TEST_SOURCES)
    return {
        "train": (dataset.role == "train") & late,
        "calibration": calibration & late,
        "heldout": test & ~style & late,
        "unseen_benign_style": test & (style | (dataset.labels == 1)) & late,
        "client_settings": (dataset.role == "client_settings") & late,
    }


def raw_features(dataset: ProbeDataset, policy: Policy) -> tuple[np.ndarray, FeatureSpec]:
    """The probe's raw input for `policy` (what the ONNX graph takes) and its spec, from the dataset."""
    if policy == "first_B":
        return dataset.features, dataset.spec
    if dataset.all_layers is None or dataset.all_layers_spec is None:
        raise ValueError("the dataset was built without all_layers features")
    raw, spec = dataset.all_layers.astype(np.float32), dataset.all_layers_spec
    if policy == "module_norms":
        raw, spec = spec.module_norms(raw), spec.model_copy(update={"policy": policy})
    return raw, spec


def features(
    dataset: ProbeDataset, policy: Policy, normalize: Normalization
) -> tuple[np.ndarray, FeatureSpec]:
    raw, spec = raw_features(dataset, policy)
    return normalise(raw, normalize), spec.model_copy(update={"normalize": normalize})


def min_step_for(dataset: ProbeDataset, min_samples: int) -> int:
    """The first builder step that integrates at least `min_samples` samples (b x t >= min_samples)."""
    builder = dataset.setting == "builder"
    batch = int(dataset.samples_seen[builder][0] // dataset.step[builder][0])
    return max(1, min(int(dataset.step.max()), -(-min_samples // batch)))


def _row(
    probe_id: str,
    variant: tuple[str, str],
    test_set: str,
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    **extra: object,
) -> dict:
    at = detection_metrics(labels, scores, threshold)
    tau = detection_metrics(labels, scores, METHOD_TAU)
    benign = scores[np.asarray(labels) == 0]
    return {
        "probe_id": probe_id,
        "policy": variant[0],
        "normalize": variant[1],
        "test_set": test_set,
        **at.model_dump(exclude={"n", "n_malicious"}),
        "false_positive_rate": float(np.mean(benign >= threshold)) if len(benign) else None,
        "threshold": threshold,
        "accuracy_at_tau_0.8": tau.accuracy,
        "recall_at_tau_0.8": tau.recall,
        "mean_p_malicious": float(scores[np.asarray(labels) == 1].mean()) if at.n_malicious else None,
        "mean_p_benign": float(benign.mean()) if len(benign) else None,
        "n_test": at.n,
        "n_test_malicious": at.n_malicious,
        **extra,
    }


def _fit(
    dataset: ProbeDataset, x: np.ndarray, mask: np.ndarray, config: ProbeTrainingConfig
) -> tuple[LogisticProbe, dict]:
    return train_probe(x[mask], dataset.labels[mask], dataset.trajectory[mask], config)


def calibrate(
    x: np.ndarray, model: LogisticProbe, labels: np.ndarray, calibration: np.ndarray, fpr: float
) -> float:
    """Threshold for `fpr` on the benign calibration steps: `fitted_threshold_for_fpr`'s rule, the normal
    fitted to their logits (trajectories differ more than steps within one, so the fitted spread is the
    safer estimate) and the empirical rule on their scores as the floor. Not that function itself: the tail
    is fitted on logits, while the floor must sit just above a score, not above its round-tripped logit."""
    scores = predict(model, x[calibration & (labels == 0)])
    logits = np.log(np.clip(scores, 1e-7, 1 - 1e-7) / np.clip(1 - scores, 1e-7, 1))
    fitted = 1 / (1 + np.exp(-normal_tail_quantile(logits, fpr)))  # 0 where no tail is fitted
    return float(max(fitted, threshold_for_fpr(scores, fpr)))


def run_probe_experiment(
    dataset: ProbeDataset,
    config: ProbeTrainingConfig,
    probe_id: str,
    fpr: float = 0.005,
    min_step: int | None = None,
    min_samples: int = 16,
    main_variant: tuple[Policy, Normalization] = VARIANTS[0],
) -> tuple[TrainedProbe, list[dict]]:
    """The main probe (`main_variant`, calibrated) and one result row per (variant, test set)."""
    if main_variant not in VARIANTS:
        raise ValueError(f"unknown probe variant {main_variant}; known: {VARIANTS}")
    x_main, spec_main = features(dataset, *main_variant)
    if min_step is None:
        min_step = min_step_for(dataset, min_samples)
    masks = split_masks(dataset, min_step, config.seed)
    rows: list[dict] = []
    main: TrainedProbe | None = None
    for variant in VARIANTS:
        if variant[0] != "first_B" and dataset.all_layers is None:
            continue
        x, spec = (x_main, spec_main) if variant == main_variant else features(dataset, *variant)
        model, log = _fit(dataset, x, masks["train"], config)
        threshold = calibrate(x, model, dataset.labels, masks["calibration"], fpr)
        for test_set in ("heldout", "unseen_benign_style", "client_settings"):
            mask = masks[test_set]
            if len(np.unique(dataset.labels[mask])) < 2:
                continue
            rows.append(
                _row(
                    probe_id,
                    variant,
                    test_set,
                    dataset.labels[mask],
                    predict(model, x[mask]),
                    threshold,
                    n_train=int(masks["train"].sum()),
                    min_step=min_step,
                )
            )
        rows += _unseen_writer_rows(dataset, x, variant, masks, config, probe_id, fpr, min_step)
        if variant == main_variant:
            main = TrainedProbe(*variant, model, spec, log, threshold, min_step)
    assert main is not None
    rows += _unseen_source_rows(dataset, x_main, main_variant, masks, config, probe_id, fpr, min_step)
    rows += _per_step_rows(dataset, x_main, main, config, probe_id)
    return main, rows


def _unseen_source_rows(
    dataset: ProbeDataset,
    x: np.ndarray,
    variant: tuple[Policy, Normalization],
    masks: dict[str, np.ndarray],
    config: ProbeTrainingConfig,
    probe_id: str,
    fpr: float,
    min_step: int,
) -> list[dict]:
    rows: list[dict] = []
    harmful = sorted(set(dataset.source[(dataset.labels == 1) & (dataset.role == "train")].tolist()))
    if len(harmful) < 2:
        return rows
    for left_out in harmful:
        train = masks["train"] & (dataset.source != left_out)
        model, _ = _fit(dataset, x, train, config)
        threshold = calibrate(x, model, dataset.labels, masks["calibration"], fpr)
        test = masks["heldout"] & ((dataset.source == left_out) | (dataset.labels == 0))
        rows.append(
            _row(
                probe_id,
                variant,
                f"unseen_harmful_source:{left_out}",
                dataset.labels[test],
                predict(model, x[test]),
                threshold,
                n_train=int(train.sum()),
                min_step=min_step,
                trained_harmful_sources=[s for s in harmful if s != left_out],
            )
        )
    return rows


def _unseen_writer_rows(
    dataset: ProbeDataset,
    x: np.ndarray,
    variant: tuple[Policy, Normalization],
    masks: dict[str, np.ndarray],
    config: ProbeTrainingConfig,
    probe_id: str,
    fpr: float,
    min_step: int,
) -> list[dict]:
    """Leave one writer out: trained and calibrated without any of its rows, tested on all of its held-out
    trajectories (calibration ones included: the probe never calibrated on them)."""
    writer = np.asarray([WRITERS.get(str(s), str(s)) for s in dataset.source])
    train_writers = {
        w
        for w in set(writer[masks["train"]].tolist())
        if len(np.unique(dataset.labels[masks["train"] & (writer == w)])) == 2
    }
    if len(train_writers) < 2:
        return []
    late = dataset.step >= min_step
    dolly = (dataset.role == "test") & np.isin(dataset.source, STYLE_TEST_SOURCES) & late
    rows: list[dict] = []
    for left_out in sorted(train_writers):
        train = masks["train"] & (writer != left_out)
        model, _ = _fit(dataset, x, train, config)
        threshold = calibrate(x, model, dataset.labels, masks["calibration"] & (writer != left_out), fpr)
        test = (dataset.role == "test") & (writer == left_out) & late
        unseen_benign = predict(model, x[dolly]) if dolly.any() else np.empty(0)
        rows.append(
            _row(
                probe_id,
                variant,
                f"unseen_writer:{left_out}",
                dataset.labels[test],
                predict(model, x[test]),
                threshold,
                n_train=int(train.sum()),
                min_step=min_step,
                trained_writers=sorted(set(writer[train].tolist())),
                unseen_benign_writer_fpr=float(np.mean(unseen_benign >= threshold))
                if len(unseen_benign)
                else None,
            )
        )
    return rows


def _per_step_rows(
    dataset: ProbeDataset, x: np.ndarray, main: TrainedProbe, config: ProbeTrainingConfig, probe_id: str
) -> list[dict]:
    """AUROC against samples per update: the main probe per step, and a probe trained on that step only."""
    rows = []
    test = ((dataset.role == "test") & ~calibration_rows(dataset, config.seed)) | (
        dataset.role == "client_settings"
    )
    train = dataset.role == "train"
    for setting in sorted(set(dataset.setting[test].tolist())):
        for t in sorted(np.unique(dataset.step[test & (dataset.setting == setting)])):
            at = test & (dataset.setting == setting) & (dataset.step == t)
            if len(np.unique(dataset.labels[at])) < 2:
                continue
            row = {
                "probe_id": probe_id,
                "test_set": "per_step",
                "setting": setting,
                "step": int(t),
                "samples_per_update": int(dataset.samples_seen[at][0]),
                "auroc_main_probe": auroc(dataset.labels[at], predict(main.model, x[at])),
                "n_test": int(at.sum()),
            }
            same_step = train & (dataset.step == t)
            if setting == "builder" and same_step.any():
                model, _ = _fit(dataset, x, same_step, config)
                row["auroc_step_only_probe"] = auroc(dataset.labels[at], predict(model, x[at]))
            rows.append(row)
    return rows

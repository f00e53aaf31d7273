"""`safe-fedllm probe ...`: build the probe's training set, train, export, evaluate and list probes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from services.cli.command_line import invoked_command

probe_app = typer.Typer(help="The LoRA-Probe: build | train | export | eval | list.", no_args_is_help=True)
DEFAULT_DATA = Path("runs/probe_data")
DEFAULT_CHECKPOINTS = Path("runs/probes")


def _counts(values: list[str], option: str) -> dict[str, int] | None:
    """`name=count` pairs of a repeated option, or None when the option was not given."""
    if not values:
        return None
    counts = {}
    for value in values:
        name, _, count = value.partition("=")
        if not count.isdigit():
            raise typer.BadParameter(f"expected SOURCE=COUNT, got {value!r}", param_hint=option)
        counts[name] = int(count)
    return counts


@probe_app.command()
def build(
    model: str = typer.Option(
        "smollm2-135m",
        help="Base model: a name (built-in or SAFE_FEDLLM_MODELS) or a checkpoint directory; aligned when "
        "it has an alignment adapter.",
    ),
    train: list[str] = typer.Option(
        [], help="SOURCE=COUNT training trajectories (repeat; default: the config's plan)."
    ),
    test: list[str] = typer.Option([], help="SOURCE=COUNT held-out trajectories (repeat)."),
    client_setting_trajectories: int = typer.Option(2, help="Per class and client setting."),
    selfgen_harmful: int = typer.Option(400, help="Instructions the unaligned model answers (0: no source)."),
    selfgen_benign: int = typer.Option(
        0,
        help="Probe-pool Alpaca instructions the unaligned model answers (0: none; E2's writer balance).",
    ),
    steps: int = typer.Option(5, help="Local steps (snapshots) per trajectory."),
    batch_size: int = typer.Option(8, help="Batch size."),
    lr: float = typer.Option(2e-4, help="Fixed lr of the trajectories."),
    all_layers: bool = typer.Option(False, help="Also record every layer's A and B (ablation)."),
    threads: int = typer.Option(2, help="torch intra-op threads."),
    output: Path | None = typer.Option(
        None, help="Dataset path without suffix (default runs/probe_data/<model>)."
    ),
) -> None:
    """Train LoRA trajectories from the fixed init on probe-only sources; save per-step features.

    Resumable: finished trajectories are checkpointed beside the output and skipped on a re-run.
    """
    import torch

    from probes.dataset import ProbeDatasetConfig, build_probe_dataset

    torch.set_num_threads(threads)
    overrides = {
        "train_trajectories": _counts(train, "--train"),
        "test_trajectories": _counts(test, "--test"),
    }
    config = ProbeDatasetConfig(
        model=model,
        client_setting_trajectories=client_setting_trajectories,
        selfgen_harmful=selfgen_harmful,
        selfgen_benign=selfgen_benign,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        all_layers=all_layers,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    from shared.model_zoo import model_key

    path = output or DEFAULT_DATA / model_key(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = build_probe_dataset(config, output=path)
    dataset.meta["command"] = invoked_command()
    dataset.save(path)
    typer.echo(
        f"{len(dataset.labels)} samples from {dataset.meta['num_trajectories']} trajectories -> {path}.npz"
    )


@probe_app.command()
def train(
    data: Path = typer.Option(..., help="Dataset path (without suffix) written by `probe build`."),
    probe_id: str = typer.Option(..., help="Identifier of the new probe, e.g. smollm2-135m-qv-r8."),
    fpr: float = typer.Option(
        0.005, help="False-positive rate on benign calibration steps the threshold allows (0.5%: see E2)."
    ),
    min_step: int | None = typer.Option(
        None, help="Score steps from this one on (default: the first that integrates --min-samples)."
    ),
    min_samples: int = typer.Option(16, help="Samples a step must integrate to count as evidence."),
    seed: int = typer.Option(2023, help="Seed of the validation split and the training."),
    policy: str = typer.Option(
        "first_B", help="Feature of the shipped probe: first_B (the paper), all_layers or module_norms."
    ),
    normalize: str = typer.Option("l2", help="Its normalisation: l2, none or center (module_norms)."),
    results: Path = typer.Option(
        Path("runs/results/e2_probe.json"), help="Where to write the result rows (committed: docs/results/)."
    ),
) -> None:
    """Train the probe (and its ablations), evaluate on held-out trajectories, save a checkpoint."""
    from probes.checkpoint import ProbeCheckpoint
    from probes.classifier import ProbeTrainingConfig
    from probes.dataset import ProbeDataset
    from probes.experiment import VARIANTS, run_probe_experiment

    dataset = ProbeDataset.load(data)
    config = ProbeTrainingConfig(seed=seed)
    variant = (policy, normalize)
    if variant not in VARIANTS:
        raise typer.BadParameter(
            f"{variant} is not a probe variant; known: {VARIANTS}", param_hint="--policy"
        )
    main, rows = run_probe_experiment(
        dataset,
        config,
        probe_id,
        fpr=fpr,
        min_step=min_step,
        min_samples=min_samples,
        main_variant=variant,
    )
    info = {
        "model": dataset.meta["model"],
        "base_fingerprint": dataset.meta["base_fingerprint"],
        "lora": dataset.meta["config"]["lora"],
        "threshold": main.threshold,
        "min_step": main.min_step,
        "training_data_hash": dataset.content_hash(),
        "dataset": dataset.meta["config"],
        "training": {**config.model_dump(mode="json"), **main.log, "calibrated_fpr": fpr},
        "metrics": {
            r["test_set"]: r
            for r in rows
            if (r.get("policy"), r.get("normalize")) == variant and r["test_set"] != "per_step"
        },
    }
    ProbeCheckpoint.from_model(probe_id, main.model, main.spec, info).save(DEFAULT_CHECKPOINTS / probe_id)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "command": invoked_command(),
                "build_command": dataset.meta.get("command"),
                "settings": info,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    typer.echo(f"threshold {main.threshold:.4f} (benign calibration FPR <= {fpr}), min_step {main.min_step}")
    header = f"{'policy':<12} {'norm':<6} {'test_set':<36} {'acc':>6} {'auroc':>6} {'fpr':>6} {'rec':>6}"
    typer.echo(header)
    for r in rows:
        if r["test_set"] == "per_step":
            step_only = r.get("auroc_step_only_probe")
            typer.echo(
                f"per_step {r['setting']:<12} step {r['step']:>2} ({r['samples_per_update']:>3} samples): "
                f"auroc {r['auroc_main_probe']:.3f}"
                + (f", step-only probe {step_only:.3f}" if step_only is not None else "")
            )
            continue
        au = f"{r['auroc']:.3f}" if r["auroc"] is not None else "  n/a"
        typer.echo(
            f"{r['policy']:<12} {r['normalize']:<6} {r['test_set']:<36} {r['accuracy']:>6.3f} {au:>6} "
            f"{r['false_positive_rate']:>6.3f} {r['recall']:>6.3f}"
        )
    typer.echo(f"checkpoint -> {DEFAULT_CHECKPOINTS / probe_id}; results -> {results}")


@probe_app.command()
def export(
    probe_id: str = typer.Option(..., help="A probe trained with `probe train`."),
    artifacts: Path = typer.Option(Path("probes/artifacts"), help="Registry directory."),
) -> None:
    """Export a trained probe to ONNX (normalisation in the graph) with its JSON manifest."""
    from probes.artifact import export_linear_probe
    from probes.checkpoint import ProbeCheckpoint

    checkpoint = ProbeCheckpoint.load(DEFAULT_CHECKPOINTS / probe_id)
    info = checkpoint.info
    manifest = export_linear_probe(
        artifacts / probe_id,
        probe_id,
        checkpoint.weight,
        checkpoint.bias,
        checkpoint.spec,
        base_model=info["model"],
        fingerprint=info["base_fingerprint"],
        lora=info["lora"],
        threshold=info["threshold"],
        min_step=info["min_step"],
        training_data_hash=info["training_data_hash"],
        training={"dataset": info["dataset"], "classifier": info["training"]},
        metrics=info["metrics"],
    )
    typer.echo(f"exported {manifest.probe_id} (dim {manifest.feature_spec.dim}) -> {artifacts / probe_id}")


@probe_app.command("eval")
def evaluate(
    probe_id: str = typer.Option(..., help="An exported probe."),
    data: Path = typer.Option(..., help="Dataset path (without suffix)."),
    artifacts: Path = typer.Option(Path("probes/artifacts"), help="Registry directory."),
) -> None:
    """Score a dataset's held-out trajectories with the exported ONNX probe; check parity with torch."""
    import numpy as np

    from probes.checkpoint import ProbeCheckpoint
    from probes.dataset import ProbeDataset
    from probes.experiment import raw_features, split_masks
    from probes.metrics import detection_metrics
    from services.probe_service.scoring import ProbeBank

    bank = ProbeBank(artifacts)
    manifest = bank.manifest(probe_id)
    dataset = ProbeDataset.load(data)
    masks = split_masks(dataset, manifest.min_step, manifest.training["classifier"]["seed"])
    spec = manifest.feature_spec
    try:
        raw, _ = raw_features(dataset, spec.policy)
    except ValueError as error:
        raise typer.BadParameter(f"{probe_id} reads {spec.policy}: {error}") from error
    scores = {}
    for test_set in ("heldout", "unseen_benign_style", "client_settings"):
        mask = masks[test_set]
        scores[test_set] = bank.score(probe_id, raw[mask])
        metrics = detection_metrics(dataset.labels[mask], scores[test_set], manifest.threshold)
        typer.echo(f"{test_set}: {metrics.model_dump_json()}")
    checkpoint = ProbeCheckpoint.load(DEFAULT_CHECKPOINTS / probe_id)
    x = spec.transform(raw[masks["heldout"]])
    reference = 1 / (1 + np.exp(-(x.astype(np.float64) @ checkpoint.weight + checkpoint.bias)))
    typer.echo(f"max |onnx - reference| = {np.abs(scores['heldout'] - reference).max():.2e}")


@probe_app.command()
def drift(
    probe_id: str = typer.Option(..., help="An exported probe."),
    data: Path = typer.Option(..., help="The dataset the probe was trained on (without suffix)."),
    rounds: int = typer.Option(3, help="k: FedAvg rounds that drift the global adapter."),
    trajectories: int = typer.Option(5, help="Held-out trajectories re-run per class."),
    artifacts: Path = typer.Option(Path("probes/artifacts"), help="Registry directory."),
    results: Path = typer.Option(Path("runs/results/e2_probe.json"), help="Result file to add the rows to."),
) -> None:
    """The drift check: probe accuracy on deltas against a k-round FedAvg global vs the fixed init."""
    import torch

    from probes.dataset import ProbeDataset
    from probes.drift import DriftCheckConfig, run_drift_check
    from services.probe_service.scoring import ProbeBank

    torch.set_num_threads(2)
    bank = ProbeBank(artifacts)
    manifest = bank.manifest(probe_id)
    rows = run_drift_check(
        ProbeDataset.load(data),
        lambda x: bank.score(probe_id, x),
        manifest.threshold,
        manifest.min_step,
        DriftCheckConfig(rounds=rounds, trajectories_per_class=trajectories),
    )
    for row in rows:
        typer.echo(
            f"{row['reference']:<24} acc {row['accuracy']:.3f} auroc {row['auroc']:.3f} "
            f"recall {row['recall']:.3f} (n={row['n']})"
        )
    document = json.loads(results.read_text()) if results.is_file() else {}
    document.update(drift_command=invoked_command(), drift_rows=rows)
    results.write_text(json.dumps(document, indent=2) + "\n")
    typer.echo(f"drift rows -> {results}")


@probe_app.command("list")
def list_probes(artifacts: Path = typer.Option(Path("probes/artifacts"), help="Registry directory.")) -> None:
    """List the registered probes."""
    from probes.registry import ProbeRegistry

    registry = ProbeRegistry(artifacts)
    for probe_id in registry.ids():
        m = registry.get(probe_id).manifest
        targets = ",".join(m.lora.target_modules)
        typer.echo(f"{probe_id}: {m.base_model.name} r={m.lora.r} {targets} dim={m.feature_spec.dim}")

"""`safe-fedllm experiment <name>`: the experiments of docs/experiments.md, each one resumable command.

Results go to runs/results/<name>.json (+ PNG plots beside it) unless --output says otherwise; a killed
run resumes from its last finished configuration when re-run with the same settings (--fresh starts over).
`--quick` runs a miniature on tiny-llama (and a small probe built for it) to check each experiment's
qualitative effect; CI runs it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

experiment_app = typer.Typer(
    help="Experiments (docs/experiments.md): e3_main | e4_ratio | e5_overhead | e6_adaptive | e7_redteam.",
    no_args_is_help=True,
)

QUICK_PROBE_DIR = Path("runs/quick_probe")
CACHE_DIR = Path("runs/cache")


@dataclass(frozen=True)
class Federation:
    """The federation settings every simulated experiment shares (the `simulate` command's).

    The defaults are the committed suite's (docs/experiments.md: what fits two hours of this 2-core
    machine): one round of all ten clients, each T=5 steps of b=8 (the shipped probe's), so every ratio
    is exact and every defense aggregates the same updates. 70 samples per client: the 743 helpful rows
    give every benign client the same shard at every ratio, so their training is shared through the
    cache. Refusals are judged on 24 greedy tokens (on the aligned start model the judgement at 16
    tokens equals the one at 48 on all 140 prompts)."""

    model: str = "smollm2-135m"
    clients: int = 10
    clients_per_round: int = 10
    rounds: int = 1
    local_steps: int = 5
    batch_size: int = 8
    samples_per_client: int = 70
    lr_max: float = 5e-4
    lr_min: float = 5e-5
    eval_harmful: int = 100
    eval_pairs: int = 100
    eval_benign: int = 40
    eval_benign_loss: int = 60
    max_new_tokens: int = 24
    eval_batch_size: int = 32
    max_live_clients: int = 4  # ten training SmolLM2 clients at once need ~21 GiB: train in waves of 4
    cache_dir: Path | None = None

    def config(self, progress: bool) -> Any:
        from services.cli.simulation_options import simulation_config

        config = simulation_config(
            model=self.model, store="memory", clients=self.clients,
            samples_per_client=self.samples_per_client, rounds=self.rounds,
            clients_per_round=self.clients_per_round, seed=2023, lr_max=self.lr_max, lr_min=self.lr_min,
            local_steps=self.local_steps, batch_size=self.batch_size, eval_harmful=self.eval_harmful,
            eval_pairs=self.eval_pairs, eval_benign=self.eval_benign,
            eval_benign_loss=self.eval_benign_loss, max_new_tokens=self.max_new_tokens,
        )  # fmt: skip
        evaluation = config.eval.model_copy(update={"progress": progress, "batch_size": self.eval_batch_size})
        cache_dir = str(self.cache_dir) if self.cache_dir is not None else None
        update = {"eval": evaluation, "cache_dir": cache_dir, "max_live_clients": self.max_live_clients}
        return config.model_copy(update=update)


def quick_federation(cache_dir: Path | None = None) -> Federation:
    """tiny-llama at the quick probe's batch and T: seconds per run, and an attack that shows."""
    from research.experiments.quick_probe import QUICK_BATCH, QUICK_STEPS

    return Federation(
        model="tiny-llama", clients=4, clients_per_round=4, rounds=2, local_steps=QUICK_STEPS,
        batch_size=QUICK_BATCH, samples_per_client=64, lr_max=3e-3, lr_min=1e-3, eval_harmful=8,
        eval_pairs=64, eval_benign=4, eval_benign_loss=8, max_new_tokens=4, cache_dir=cache_dir,
    )  # fmt: skip


@experiment_app.callback()
def experiment_group(
    ctx: typer.Context,
    model: str = typer.Option(Federation.model, help="Base model."),
    clients: int = typer.Option(Federation.clients),
    clients_per_round: int = typer.Option(Federation.clients_per_round),
    rounds: int = typer.Option(Federation.rounds),
    local_steps: int = typer.Option(Federation.local_steps, help="T (the shipped probe's)."),
    batch_size: int = typer.Option(Federation.batch_size, help="b (the shipped probe's)."),
    samples_per_client: int = typer.Option(Federation.samples_per_client),
    eval_harmful: int = typer.Option(Federation.eval_harmful, help="Held-out harmful prompts."),
    max_new_tokens: int = typer.Option(Federation.max_new_tokens, help="Greedy tokens judged for refusal."),
    cache_dir: Path = typer.Option(
        CACHE_DIR,
        help=(
            "Client training and evaluations remembered across federations and experiments: every "
            "defense of one seed and ratio aggregates the same round-0 updates, clean FedAvg repeats "
            "across experiments. Results are the same with or without it; it only saves time."
        ),
    ),
    cache: bool = typer.Option(True, help="--no-cache trains and evaluates every federation from scratch."),
) -> None:
    """Settings shared by the federated experiments (e3, e4, e6) go before the experiment's name."""
    ctx.obj = Federation(
        model=model, clients=clients, clients_per_round=clients_per_round, rounds=rounds,
        local_steps=local_steps, batch_size=batch_size, samples_per_client=samples_per_client,
        eval_harmful=eval_harmful, max_new_tokens=max_new_tokens, cache_dir=cache_dir if cache else None,
    )  # fmt: skip


def _federation(ctx: typer.Context, quick: bool) -> Federation:
    """The group's federation settings, or the tiny-llama miniature under --quick (same cache)."""
    shared: Federation = ctx.obj or Federation()
    return quick_federation(shared.cache_dir) if quick else shared


def _prepare_quick(probe_registry: Path) -> None:
    from research.experiments.quick_probe import build_quick_probe, use_probe_registry

    use_probe_registry(build_quick_probe(probe_registry))


def _output(name: str, output: Path | None, quick: bool) -> Path:
    from research.experiments.runner import RESULTS_DIR

    return output or RESULTS_DIR / (f"{name}_quick.json" if quick else f"{name}.json")


def _finish(module: Any, result: dict, output: Path, checks: dict) -> None:
    result["checks"] = checks
    output.write_text(json.dumps(result, indent=2) + "\n")
    paths = module.plot(result, output)
    for name, ok in checks.items():
        typer.echo(f"check {'PASS' if ok else 'FAIL'}: {name}")
    typer.echo(f"wrote {output} and {', '.join(str(p) for p in paths)}")


def _simulated(
    name: str,
    module: Any,
    federation: Federation,
    settings: dict,
    configurations: list,
    output: Path,
    fresh: bool,
    progress: bool,
) -> dict:
    from research.experiments.runner import run_configurations
    from research.simulation import simulation_session
    from services.cli.command_line import invoked_command

    # where the cache lives and how many clients train at once change no result
    simulation = federation.config(progress).model_dump(
        mode="json", exclude={"cache_dir", "max_live_clients"}
    )
    all_settings = {"simulation": simulation, **settings}
    with simulation_session():  # the configurations share the base, the services and idle client actors
        return run_configurations(
            name, configurations, output, all_settings, invoked_command(), fresh=fresh, progress=progress
        )


QUICK_HELP = "Miniature on tiny-llama with a small probe built for it (CI runs this)."
SEEDS_HELP = "Seeds (repeat): shards, client sampling and rounds."


@dataclass(frozen=True)
class _Grid:
    """The options E3 and E4 share: seeds x malicious ratios x defenses, as given on the command line."""

    seeds: list[int]
    ratios: list[float]
    defenses: list[str]
    quick: bool
    probe_registry: Path
    output: Path | None
    fresh: bool
    progress: bool


def _run_grid(
    name: str,
    module: Any,
    ctx: typer.Context,
    grid: _Grid,
    *,
    quick_ratio: float,
    checks: Callable[[Sequence[dict], Sequence[str]], dict],
) -> None:
    """One federation per (seed, ratio, defense); --quick: seed 7, one ratio, FedAvg and shadow."""
    seeds, ratios, defenses = grid.seeds, grid.ratios, grid.defenses
    federation = _federation(ctx, grid.quick)
    if grid.quick:
        _prepare_quick(grid.probe_registry)
        seeds, ratios, defenses = [7], [quick_ratio], defenses or ["fedavg", "shadow"]
    defenses = defenses or list(module.DEFENSES)
    path = _output(name, grid.output, grid.quick)
    configs = module.configurations(federation.config(grid.progress), seeds, ratios, defenses, grid.progress)
    settings = {"seeds": seeds, "ratios": ratios, "defenses": defenses, "quick": grid.quick}
    result = _simulated(name, module, federation, settings, configs, path, grid.fresh, grid.progress)
    _finish(module, result, path, checks(result["rows"], defenses))


@experiment_app.command("e3_main")
def e3_main(
    ctx: typer.Context,
    seed: list[int] = typer.Option([2023, 2024], help=SEEDS_HELP),
    malicious_ratio: list[float] = typer.Option([0.3, 0.5], help="Attacked ratios (repeat)."),
    defense: list[str] = typer.Option(
        [], help="Defenses (repeat; default: FedAvg, the levels, the baselines)."
    ),
    quick: bool = typer.Option(False, help=QUICK_HELP),
    probe_registry: Path = typer.Option(QUICK_PROBE_DIR, help="--quick: where the tiny probe is built."),
    output: Path | None = typer.Option(None, help="Result JSON (default runs/results/e3_main.json)."),
    fresh: bool = typer.Option(False, help="Ignore a partial result and start over."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Clean vs attacked FedAvg vs each Safe-FedLLM level vs the baselines, at 30% and 50% malicious."""
    from research.experiments import e3_main as module

    grid = _Grid(seed, malicious_ratio, defense, quick, probe_registry, output, fresh, progress)
    _run_grid("e3_main", module, ctx, grid, quick_ratio=0.5, checks=module.closer_to_clean)


@experiment_app.command("e4_ratio")
def e4_ratio(
    ctx: typer.Context,
    seed: list[int] = typer.Option([2023], help=SEEDS_HELP),
    malicious_ratio: list[float] = typer.Option([0.1, 0.3, 0.5, 0.7], help="Ratios (repeat)."),
    defense: list[str] = typer.Option([], help="Defenses (repeat; default FedAvg, shadow, Median, ...)."),
    quick: bool = typer.Option(False, help=QUICK_HELP),
    probe_registry: Path = typer.Option(QUICK_PROBE_DIR, help="--quick: where the tiny probe is built."),
    output: Path | None = typer.Option(None, help="Result JSON (default runs/results/e4_ratio.json)."),
    fresh: bool = typer.Option(False, help="Ignore a partial result and start over."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Harmless rate against the malicious ratio (10 -> 70%), one line per defense."""
    from research.experiments import e4_ratio as module

    grid = _Grid(seed, malicious_ratio, defense, quick, probe_registry, output, fresh, progress)
    _run_grid("e4_ratio", module, ctx, grid, quick_ratio=0.75, checks=module.checks)


@experiment_app.command("e6_adaptive")
def e6_adaptive(
    ctx: typer.Context,
    seed: list[int] = typer.Option([2023], help=SEEDS_HELP),
    malicious_ratio: float = typer.Option(0.5, help="Share of malicious clients."),
    defense: list[str] = typer.Option([], help="Defenses (repeat; default FedAvg and the four levels)."),
    attack: list[str] = typer.Option(
        [], help="Attacks (repeat; default all): none, mixing, freeze_probe_layer, scaling, probe_penalty."
    ),
    benign_share: list[float] = typer.Option([0.25, 0.5, 0.75], help="mixing: benign shares (repeat)."),
    scale: float = typer.Option(3.0, help="scaling: factor on the update."),
    penalty_weight: float = typer.Option(1.0, help="probe_penalty: lambda on the probe's score."),
    quick: bool = typer.Option(False, help=QUICK_HELP),
    probe_registry: Path = typer.Option(QUICK_PROBE_DIR, help="--quick: where the tiny probe is built."),
    output: Path | None = typer.Option(None, help="Result JSON (default runs/results/e6_adaptive.json)."),
    fresh: bool = typer.Option(False, help="Ignore a partial result and start over."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Adaptive attackers (benign mixing, frozen probe layer, scaling, probe penalty) vs each level."""
    from research.clients.attacks import AttackConfig
    from research.experiments import e6_adaptive as module

    federation = _federation(ctx, quick)
    if quick:
        _prepare_quick(probe_registry)
        seed, defense = [7], defense or ["fedavg", "shadow"]
        attack = attack or ["freeze_probe_layer", "probe_penalty"]  # the probe-aware ones
    unknown = sorted(set(attack) - set(module.ATTACKS))
    if unknown:
        raise typer.BadParameter(f"unknown attacks {unknown}; available: {', '.join(module.ATTACKS)}")
    probe_dir = str(_probe_dir(federation.model))
    kinds = attack or list(module.ATTACKS)
    attacks = [
        config
        for kind in kinds
        for config in (
            [AttackConfig(kind="mixing", benign_share=s) for s in benign_share]
            if kind == "mixing"
            else [
                AttackConfig(
                    kind=kind,
                    scale=scale,
                    penalty_weight=penalty_weight,
                    probe_dirs=(probe_dir,) if kind == "probe_penalty" else (),
                )
            ]
        )
    ]
    defenses = defense or list(module.DEFENSES)
    path = _output("e6_adaptive", output, quick)
    configs = module.configurations(
        federation.config(progress), seed, malicious_ratio, defenses, attacks, progress
    )
    settings = {
        "seeds": seed,
        "ratio": malicious_ratio,
        "defenses": defenses,
        "attacks": [a.model_dump() for a in attacks],
        "quick": quick,
    }
    result = _simulated("e6_adaptive", module, federation, settings, configs, path, fresh, progress)
    result["outcomes"] = module.outcomes(result["rows"])
    checks = {
        f"{o['attack']} still harms under fedavg": o["still_harms"]
        for o in result["outcomes"]
        if o["defense"] == "fedavg"
    }
    _finish(module, result, path, checks)


@functools.cache
def _base_fingerprint(model: str) -> str:
    from shared.model_zoo import load_base_model

    return load_base_model(model).fingerprint


def _probe_dir(model: str, inputs: str = "steps") -> Path:
    """The published probe the level reading `inputs` binds for `model` (resolve_probe, as the server
    does): what a probe-penalty attacker reads."""
    from services.aggregator.inputs import Inputs
    from services.aggregator.probe_binding import resolve_probe
    from services.probe_service.scoring import ProbeBank
    from services.probe_service.settings import ProbeServiceSettings
    from shared.config import LoraSettings

    artifacts = ProbeServiceSettings().artifacts_dir
    manifest = resolve_probe(
        ProbeBank(artifacts),
        model=model,
        lora=LoraSettings(),
        inputs=Inputs(inputs),
        base_fingerprint=_base_fingerprint(model),
    )
    return Path(artifacts) / manifest.probe_id


@experiment_app.command("e7_redteam")
def e7_redteam(
    ctx: typer.Context,
    seed: int = typer.Option(2023, help="Seed: shards, client sampling and rounds."),
    defense: list[str] = typer.Option([], help="Defenses (repeat; default: see e7_redteam.DEFENSES)."),
    attack: list[str] = typer.Option([], help="Attack kinds (repeat; default all of default_attacks)."),
    calibration_clients: int = typer.Option(6, help="Benign root-set updates the norm bound is set on."),
    penalty_weight: list[float] = typer.Option(
        [1.0], help="probe_penalty and surrogate_penalty: lambda (repeat: one attack per weight)."
    ),
    quick: bool = typer.Option(False, help=QUICK_HELP),
    probe_registry: Path = typer.Option(QUICK_PROBE_DIR, help="--quick: where the tiny probe is built."),
    output: Path | None = typer.Option(None, help="Result JSON (default runs/results/e7_redteam.json)."),
    fresh: bool = typer.Option(False, help="Ignore a partial result and start over."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Red team at 50% malicious: forged evidence, splicing, frozen and split layers, white- and black-box
    probe penalties, scaling, mixing and an unseen writer, against the deployable default and the rest."""
    from research.experiments import e7_redteam as module
    from shared.config import runtime_settings
    from shared.data.pools import build_pools

    federation = _federation(ctx, quick)
    if quick:
        _prepare_quick(probe_registry)
        calibration_clients = min(calibration_clients, 3)
    config = federation.config(progress)
    # beside the cache: the norm bound's calibration and the unseen writer's rows, made once
    work = (federation.cache_dir.parent if federation.cache_dir else Path("runs")) / "e7" / config.model
    work.mkdir(parents=True, exist_ok=True)
    calibration_file = work / f"calibration_{calibration_clients}.json"
    if not calibration_file.is_file():
        calibration = module.calibrated_norm_bound(config, calibration_clients)
        calibration_file.write_text(json.dumps(calibration, indent=2) + "\n")
    calibration = json.loads(calibration_file.read_text())
    verification = config.verification.model_copy(update={"norm_bound": calibration["norm_bound"]})
    config = config.model_copy(update={"verification": verification})
    if quick:
        attack = attack or ["none", "forged_snapshots", "splice", "freeze_layer"]
        defense = defense or ["fedavg", "verified"]
    rows = work / "unseen_writer.jsonl"
    if not attack or "unseen_writer" in attack:  # made once, by the unaligned model (a few minutes)
        client_pool = build_pools(runtime_settings().data_dir).client
        count = (
            round(config.num_clients * module.RATIO)
            * config.training.batch_size
            * config.training.local_steps
        )
        module.unseen_writer_rows(config.model, client_pool, count, rows)
    probe_dirs = [str(_probe_dir(config.model, inputs)) for inputs in ("steps", "verified")]
    attacks = module.default_attacks(sorted(set(probe_dirs)), str(rows), penalty_weight)
    if quick:  # tiny-llama has two layers
        attacks = [a.model_copy(update={"layer": 1}) if a.kind == "freeze_layer" else a for a in attacks]
    unknown = sorted(set(attack) - {a.kind for a in attacks})
    if unknown:
        known = ", ".join(a.kind for a in attacks)
        raise typer.BadParameter(f"unknown attacks {unknown}; available: {known}")
    attacks = [a for a in attacks if not attack or a.kind in attack]
    defenses = defense or list(module.DEFENSES)
    path = _output("e7_redteam", output, quick)
    configs = module.configurations(config, seed, defenses, attacks, progress)
    settings = {
        "seed": seed,
        "ratio": module.RATIO,
        "defenses": defenses,
        "deployable_default": module.DEPLOYABLE_DEFAULT,
        "attacks": [a.model_dump() for a in attacks],
        "calibration": calibration,
        "unseen_writer_rows": sum(1 for _ in rows.open(encoding="utf-8")) if rows.is_file() else None,
        "quick": quick,
    }
    result = _simulated("e7_redteam", module, federation, settings, configs, path, fresh, progress)
    result["outcomes"] = module.outcomes(result["rows"])
    result["table"] = module.table(result)
    typer.echo(result["table"])
    _finish(module, result, path, module.checks(result))


@experiment_app.command("e5_overhead")
def e5_overhead(
    model: str = typer.Option("smollm2-135m", help="Model whose LoRA shapes the synthetic updates take."),
    size: list[int] = typer.Option([10, 100, 1000, 10000], help="Updates per round (repeat)."),
    level: list[str] = typer.Option(
        [], help="Probe levels (repeat; default step, client, shadow, evidence)."
    ),
    baseline: list[str] = typer.Option([], help="Baselines (repeat; default krum, bulyan, flame)."),
    time_budget: float = typer.Option(120.0, help="Longest single baseline measurement to attempt (s)."),
    memory_fraction: float = typer.Option(0.6, help="Share of available memory a baseline may use."),
    threads: int = typer.Option(2, help="ONNX Runtime threads."),
    quick: bool = typer.Option(False, help=QUICK_HELP),
    probe_registry: Path = typer.Option(QUICK_PROBE_DIR, help="--quick: where the tiny probe is built."),
    output: Path | None = typer.Option(None, help="Result JSON (default runs/results/e5_overhead.json)."),
    fresh: bool = typer.Option(False, help="Ignore a partial result and start over."),
    progress: bool = typer.Option(True, help="Progress bars."),
) -> None:
    """Server cost (probe scoring + aggregation) for 10 -> 10,000 updates: probe levels vs Krum, Bulyan,
    FLAME, on synthetic updates of the model's real LoRA shapes."""
    from research.experiments import e5_overhead as module
    from research.experiments.plots import cost_vs_clients
    from research.experiments.runner import run_configurations
    from services.cli.command_line import invoked_command

    if quick:
        _prepare_quick(probe_registry)
        model, size, time_budget = "tiny-llama", [10, 100, 1000], 5.0
    settings = module.OverheadSettings(
        model=model,
        sizes=tuple(size),
        levels=tuple(level) or module.LEVELS,
        baselines=tuple(baseline) or module.BASELINES,
        time_budget_s=time_budget,
        memory_fraction=memory_fraction,
        threads=threads,
    )
    path = _output("e5_overhead", output, quick)
    configs, context = module.configurations(settings)
    result = run_configurations(
        "e5_overhead",
        configs,
        path,
        {**settings.model_dump(mode="json"), "quick": quick},
        invoked_command(),
        fresh=fresh,
        progress=progress,
        extra=context,
    )
    result["summary"] = module.summarise(result["rows"], settings.levels, max(settings.sizes))
    checks = module.checks(result["rows"])
    result["checks"] = checks
    path.write_text(json.dumps(result, indent=2) + "\n")
    plot = cost_vs_clients(result["rows"], path.with_suffix(".png"))
    for name, ok in checks.items():
        typer.echo(f"check {'PASS' if ok else 'FAIL'}: {name}")
    for method, entry in result["summary"].items():
        typer.echo(f"{method}: {entry}")
    typer.echo(f"wrote {path} and {plot}")

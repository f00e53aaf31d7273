"""`safe-fedllm client enrol|run`: join a federation as a participant (SAFE_FEDLLM_PARTICIPANT_* settings)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import typer

client_app = typer.Typer(help="Join a federation: enrol once, then run rounds on your own data.")

_SERVER = typer.Option(..., envvar="SAFE_FEDLLM_PARTICIPANT_SERVER", help="The aggregator's URL.")
_ID = typer.Option(..., envvar="SAFE_FEDLLM_PARTICIPANT_CLIENT_ID", help="Your client id.")
_STATE = typer.Option(
    Path(".safe-fedllm-client"),
    envvar="SAFE_FEDLLM_PARTICIPANT_STATE_DIR",
    help="Credentials (0600) and the current round's update.",
)
_TOKEN = typer.Option(
    None,
    envvar="SAFE_FEDLLM_PARTICIPANT_ENROLLMENT_TOKEN",
    help="The operator's single-use enrollment token (only needed once).",
)
_CA = typer.Option(None, envvar="SAFE_FEDLLM_PARTICIPANT_CA_BUNDLE", help="CA bundle to verify the server.")
_INSECURE = typer.Option(False, "--insecure-http", help="Allow a plain http:// server (no TLS).")


def _settings(**values: Any) -> Any:
    from pydantic import ValidationError

    from services.participant import ParticipantSettings

    try:
        return ParticipantSettings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        typer.echo(f"error: {reasons}", err=True)
        raise typer.Exit(2) from None


def _participant(settings: Any, rows: list[tuple[str, str]] | None = None) -> Any:
    from services.participant import Participant

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per round, not one per poll
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # finish the current step, keep what is saved, exit 0
        signal.signal(signum, lambda *_: stop.set())
    return Participant(settings, rows, echo=typer.echo, stop=stop)


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(2) from None


@client_app.command()
def enrol(
    server: str = _SERVER,
    client_id: str = _ID,
    enrollment_token: str | None = _TOKEN,
    state_dir: Path = _STATE,
    ca_bundle: Path | None = _CA,
    insecure_http: bool = _INSECURE,
) -> None:
    """Register with the enrollment token; the credentials are kept (0600) in the state dir."""
    from services.participant.credentials import CredentialsError
    from services.participant.participant import ParticipantError

    settings = _settings(
        server=server, client_id=client_id, enrollment_token=enrollment_token, state_dir=state_dir,
        ca_bundle=ca_bundle, insecure_http=insecure_http,
    )  # fmt: skip
    participant = _participant(settings)
    try:
        participant.enrol()
    except (ParticipantError, CredentialsError) as error:
        _fail(error)
    finally:
        participant.api.close()
    typer.echo(f"{client_id}: enrolled at {server}")


@client_app.command()
def run(
    server: str = _SERVER,
    client_id: str = _ID,
    data: Path = typer.Option(
        ..., envvar="SAFE_FEDLLM_PARTICIPANT_DATA", help="JSONL/JSON of instruction/response rows, or a dir."
    ),
    enrollment_token: str | None = _TOKEN,
    state_dir: Path = _STATE,
    ca_bundle: Path | None = _CA,
    insecure_http: bool = _INSECURE,
    poll_interval: float | None = typer.Option(None, help="Seconds between task polls while waiting."),
    until_round: int | None = typer.Option(None, help="Exit once this round has closed."),
    max_backoff: float | None = typer.Option(None, help="Longest wait in seconds between retries (60)."),
    threads: int | None = typer.Option(None, help="torch threads (default: the task's)."),
    seed: int | None = typer.Option(None, help="Seed of round subsets and dropout."),
    progress: bool = typer.Option(True, help="Show a progress bar while training."),
) -> None:
    """Loop: ask for the task, train on your data when sampled, submit the adapter, wait. Stop: SIGTERM."""
    from services.participant.credentials import CredentialsError
    from services.participant.data import DataError, load_rows
    from services.participant.participant import ParticipantError

    settings = _settings(
        server=server, client_id=client_id, data=data, enrollment_token=enrollment_token, state_dir=state_dir,
        ca_bundle=ca_bundle, insecure_http=insecure_http, poll_interval_s=poll_interval,
        until_round=until_round, max_backoff_s=max_backoff, torch_threads=threads, seed=seed,
        progress=progress,
    )  # fmt: skip
    try:
        rows = load_rows(data)  # before anything else: bad data fails fast, with no row printed
    except DataError as error:
        _fail(error)
    typer.echo(f"{client_id}: {len(rows)} training rows from {data}; server {server}")
    participant = _participant(settings, rows)
    try:
        rounds = participant.run()
    except (ParticipantError, CredentialsError) as error:
        _fail(error)
    typer.echo(f"{client_id}: submitted {rounds} round(s) this run")


@client_app.command()
def federate(
    server: str = _SERVER,
    tokens_file: Path = typer.Option(
        ..., help="Enrollment tokens, one per client (a JSON list, e.g. the chart's Secret key, or lines)."
    ),
    clients: int = typer.Option(4, help="Participants (Ray actors)."),
    malicious_ratio: float = typer.Option(0.0, help="Share of them holding harmful shards (as `simulate`)."),
    samples_per_client: int = typer.Option(64, help="Shard size per client, from the client pool."),
    benign_source: str = typer.Option("helpful", help="Benign shards' source: helpful, alpaca or dolly."),
    seed: int = typer.Option(2023, help="Seed of the shards."),
    until_round: int = typer.Option(..., help="Each participant exits once this round has closed."),
    state_root: Path = typer.Option(Path("/tmp/safe-fedllm-federation"), help="Per-client state dirs."),
    ca_bundle: Path | None = _CA,
    insecure_http: bool = _INSECURE,
    cpus_per_client: float = typer.Option(1.0, help="Ray CPUs each participant actor reserves."),
    threads: int = typer.Option(1, help="torch threads per participant."),
    poll_interval: float = typer.Option(5.0, help="Seconds between task polls while waiting."),
    ray_address: str | None = typer.Option(None, help="Ray cluster (default: the job's, or a local one)."),
) -> None:
    """N participants as Ray actors, each enrolling with its own token and training its own shard, all
    talking to the aggregator over REST (the chart's federation RayJob runs this)."""
    import ray

    from research.clients.population import build_population
    from research.participant_cluster import plan_federation, read_tokens, run_federation
    from shared.config import runtime_settings
    from shared.data.pools import build_pools

    _settings(server=server, client_id="check", ca_bundle=ca_bundle, insecure_http=insecure_http)  # fail fast
    pools = build_pools(runtime_settings().data_dir)
    specs = build_population(
        pools.client, clients, malicious_ratio, samples_per_client, benign_source=benign_source, seed=seed
    )
    try:
        members = plan_federation(specs, read_tokens(tokens_file))
    except (OSError, ValueError) as error:
        _fail(error)
    kinds = ", ".join(f"{m.spec.client_id}:{m.spec.kind}" for m in members)
    typer.echo(f"federation of {len(members)} participants ({kinds}) against {server}")
    ray.init(address=ray_address, log_to_driver=True)
    common = {
        "server": server, "ca_bundle": ca_bundle, "insecure_http": insecure_http,
        "poll_interval_s": poll_interval, "until_round": until_round, "seed": seed,
    }  # fmt: skip
    results = run_federation(members, common, state_root, cpus_per_client, threads)
    for result in results:
        typer.echo(f"{result['client_id']}: submitted {result['rounds']} round(s)")

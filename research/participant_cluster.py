"""A federation in a Ray cluster: N participants as Ray actors, each talking to the aggregator over REST.

Unlike the simulation, nothing here calls the aggregator in-process: each actor is a `Participant` with its
own enrollment token and shard, exactly what a remote organisation runs. The shards are the simulation's
(`build_population`: benign clients first, then malicious ones, from the client pool); `plan_federation`
pairs them with tokens and is pure; `run_federation` is the Ray part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research.clients.population import ClientSpec


@dataclass(frozen=True)
class Member:
    spec: ClientSpec
    enrollment_token: str


def read_tokens(path: Path) -> list[str]:
    """Enrollment tokens: a JSON list (the chart's Secret key), or one token a line."""
    text = path.read_text().strip()
    if text.startswith("["):
        tokens = json.loads(text)
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError(f"{path}: expected a JSON list of non-empty strings")
        return tokens
    return [line.strip() for line in text.splitlines() if line.strip()]


def plan_federation(specs: list[ClientSpec], tokens: list[str]) -> list[Member]:
    """Client i enrols with token i: every member has its own single-use token, none is shared."""
    if len(tokens) < len(specs):
        raise ValueError(f"{len(specs)} clients need {len(specs)} enrollment tokens, got {len(tokens)}")
    return [Member(spec, token) for spec, token in zip(specs, tokens, strict=False)]


class ParticipantHost:
    """Actor body: one participant, its log lines prefixed with its id (the driver collects them)."""

    def __init__(self, settings: dict[str, Any], rows: list[tuple[str, str]]) -> None:
        from services.participant.participant import Participant
        from services.participant.settings import ParticipantSettings

        self.lines: list[str] = []
        self.settings = ParticipantSettings(**settings)
        self.participant = Participant(self.settings, rows, echo=self._echo)

    def _echo(self, line: str) -> None:
        self.lines.append(line)
        print(f"[{self.settings.client_id}] {line}", flush=True)

    def run(self) -> dict[str, Any]:
        rounds = self.participant.run()
        return {"client_id": self.settings.client_id, "rounds": rounds, "lines": self.lines}


def run_federation(
    members: list[Member],
    common: dict[str, Any],
    state_root: Path,
    cpus_per_client: float = 1.0,
    torch_threads: int = 1,
) -> list[dict[str, Any]]:
    """Start one actor per member and wait for all of them (each ends at `until_round`, or on error)."""
    import ray

    actor = ray.remote(ParticipantHost)
    hosts = [
        actor.options(num_cpus=cpus_per_client, name=None).remote(
            {
                **common,
                "client_id": member.spec.client_id,
                "enrollment_token": member.enrollment_token,
                "state_dir": str(state_root / member.spec.client_id),
                "torch_threads": torch_threads,
                "progress": False,
            },
            list(member.spec.examples),
        )
        for member in members
    ]
    return ray.get([host.run.remote() for host in hosts])  # type: ignore[attr-defined]  # an actor handle

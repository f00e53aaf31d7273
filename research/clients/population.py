"""The client population: benign shards then malicious shards, drawn from the client pool only.

As in the official code, clients 0..n_b-1 are benign and the rest malicious; each source's client-pool
samples are shuffled with a fixed seed and dealt into equal shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from research.clients.attacks import AttackConfig
from shared.data.pools import Pool

ClientKind = Literal["benign", "malicious"]
BENIGN_SOURCES = ("helpful", "alpaca", "dolly")


@dataclass(frozen=True)
class ClientSpec:
    client_id: str
    kind: ClientKind
    examples: tuple[tuple[str, str], ...]  # (instruction, response)
    attack: AttackConfig | None = None  # how a malicious client adapts to the defense (None: plain SFT)
    cover: tuple[tuple[str, str], ...] = ()  # benign rows a covered attacker forges, splices or splits with

    @property
    def malicious(self) -> bool:
        return self.kind == "malicious"


def num_malicious(num_clients: int, malicious_ratio: float) -> int:
    if not 0.0 <= malicious_ratio <= 1.0:
        raise ValueError(f"malicious_ratio must be in [0, 1], got {malicious_ratio}")
    return round(num_clients * malicious_ratio)


def build_population(
    client_pool: Pool,
    num_clients: int,
    malicious_ratio: float,
    samples_per_client: int,
    benign_source: str = "helpful",
    seed: int = 2023,
    attack: AttackConfig | None = None,
) -> list[ClientSpec]:
    """`attack`: given to every malicious client; `mixing` dilutes their shards with benign rows that no
    benign client holds (cycled when those run out), a covered attack (`AttackConfig.covered`) gets as many
    of those rows as cover, and `unseen_writer` replaces the harmful answers with its writer's rows."""
    if client_pool.name != "client":
        raise ValueError(f"FL clients must draw from the client pool, not {client_pool.name!r}")
    if benign_source not in BENIGN_SOURCES:
        raise ValueError(f"benign_source must be one of {BENIGN_SOURCES}")
    n_malicious = num_malicious(num_clients, malicious_ratio)
    n_benign = num_clients - n_malicious
    rng = np.random.default_rng(seed)
    benign = [(x.instruction, x.response) for x in getattr(client_pool, benign_source)]
    harmful = [(p.instruction, p.harmful) for p in client_pool.harmful]
    if attack is not None and attack.kind == "unseen_writer":
        harmful = list(unseen_writer_rows(attack))
    clients: list[ClientSpec] = []
    spare: list[tuple[str, str]] = benign  # benign rows no benign client holds, for mixing attackers
    for kind, count, rows in (("benign", n_benign, benign), ("malicious", n_malicious, harmful)):
        if count == 0:
            continue
        order = rng.permutation(len(rows))
        per_client = min(samples_per_client, len(rows) // count)
        if per_client < 1:
            raise ValueError(f"{len(rows)} {kind} samples cannot fill {count} client shards")
        if kind == "benign":
            spare = [rows[i] for i in order[count * per_client :]] or benign
        for shard in range(count):
            picks = order[shard * per_client : (shard + 1) * per_client]
            examples = tuple(rows[i] for i in picks)
            if kind == "malicious" and attack is not None and attack.kind == "mixing":
                examples = _mixed(examples, spare, attack.benign_share, shard, rng)
            client_attack = attack if kind == "malicious" else None
            cover: tuple[tuple[str, str], ...] = ()
            if client_attack is not None and client_attack.covered:
                cover = tuple(spare[(shard * len(examples) + i) % len(spare)] for i in range(len(examples)))
            client_id = f"client-{len(clients):03d}"
            clients.append(ClientSpec(client_id, kind, examples, client_attack, cover))  # type: ignore[arg-type]
    return clients


def _mixed(
    harmful: tuple[tuple[str, str], ...],
    benign: list[tuple[str, str]],
    benign_share: float,
    shard: int,
    rng: np.random.Generator,
) -> tuple[tuple[str, str], ...]:
    """The shard's size kept: round(share * size) benign rows (this shard's own slice of `benign`), the
    rest harmful, shuffled so every local batch mixes both."""
    size = len(harmful)
    n_benign = round(benign_share * size)
    picks = [benign[(shard * n_benign + i) % len(benign)] for i in range(n_benign)]
    rows = [*harmful[: size - n_benign], *picks]
    return tuple(rows[i] for i in rng.permutation(len(rows)))


def unseen_writer_rows(attack: AttackConfig) -> tuple[tuple[str, str], ...]:
    """The unseen writer's (instruction, answer) rows: a JSONL file the experiment wrote (e7_redteam)."""
    path = Path(attack.harmful_rows or "")
    if not path.is_file():
        raise ValueError(f"unseen_writer: no rows file at {path}")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"unseen_writer: {path} holds no rows")
    return tuple((str(r["instruction"]), str(r["response"])) for r in rows)

"""Where the probe's trajectories get their samples: named sources, each benign or harmful.

- `maliciousgen`: the probe pool's MaliciousGen pairs (harmful answers written by Mistral-7B);
- `selfgen_harmful`: harmful instructions of safety-tuned-llamas' refusal set (a data set no other pool
  reads) answered by the *unaligned* SmolLM2 itself, keeping only answers without refusal markers. A second
  generator, so the probe can be tested on a harmful source it never trained on (leave-one-source-out);
- `selfgen_benign`: the probe pool's Alpaca instructions answered by the same unaligned SmolLM2. With it each
  harmful writer also writes benign data (Mistral: MaliciousGen / helpfulQA; SmolLM2: selfgen_harmful /
  selfgen_benign), so a probe cannot separate the classes by who wrote them (leave-one-writer-out rows, E2);
- `helpful`, `alpaca`: benign training sources of the probe pool (two writing styles);
- `dolly`: benign, test only (the unseen-style check).

Generated answers are cached under `runs/` (never committed, never logged) and re-made deterministically
(greedy decoding) when missing. Instructions already in any pool are dropped, so the probe's sources stay
disjoint from the client and evaluation pools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.data.pools import DataPools
from shared.data.sources import normalise_instruction

HARMFUL_SOURCES = ("maliciousgen", "selfgen_harmful")
BENIGN_SOURCES = ("helpful", "alpaca", "dolly", "selfgen_benign")
# Who wrote each source's answers: the unit of the leave-one-writer-out evaluation.
WRITERS = {
    "maliciousgen": "mistral",
    "helpful": "mistral",
    "selfgen_harmful": "smollm2",
    "selfgen_benign": "smollm2",
    "alpaca": "alpaca",
    "dolly": "dolly",
}
STYLE_TEST_SOURCES = ("dolly",)
SELFGEN_CACHE = Path("runs/probe_sources")
_STL_FILE = Path("safety_tuned_llamas") / "safety_only_data_Instructions.json"


@dataclass(frozen=True)
class ProbeSource:
    name: str
    label: int  # 1 = malicious
    rows: tuple[tuple[str, str], ...]  # (instruction, response)


def stl_harmful_instructions(data_dir: Path, pools: DataPools, limit: int, seed: int) -> list[str]:
    """Harmful instructions of the safety-tuned-llamas refusal set that no pool holds, seeded order."""
    rows = json.loads((data_dir / _STL_FILE).read_text(encoding="utf-8"))
    claimed: set[str] = set()
    for name in ("alignment", "probe", "client", "evaluation"):
        claimed |= pools[name].instructions()
    unique: dict[str, str] = {}
    for row in rows:
        text = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        key = normalise_instruction(text)
        if key not in claimed:
            unique.setdefault(key, text)
    keys = sorted(unique)
    order = np.random.default_rng(seed).permutation(len(keys))
    return [unique[keys[i]] for i in order[:limit]]


def selfgen_harmful_rows(
    model_name: str, data_dir: Path, pools: DataPools, count: int, seed: int, max_new_tokens: int = 96
) -> tuple[tuple[str, str], ...]:
    """(instruction, compliant answer) pairs written by the unaligned model; cached as JSONL under runs/."""
    instructions = stl_harmful_instructions(data_dir, pools, count, seed)
    name = f"selfgen_harmful_{count}_{seed}_{max_new_tokens}"
    return _selfgen_rows(model_name, name, instructions, max_new_tokens)


def selfgen_benign_rows(
    model_name: str, pools: DataPools, count: int, max_new_tokens: int = 96
) -> tuple[tuple[str, str], ...]:
    """The probe pool's Alpaca instructions answered by the unaligned model (its benign writing)."""
    instructions = [x.instruction for x in pools.probe.alpaca[:count]]
    return _selfgen_rows(model_name, f"selfgen_benign_{count}_{max_new_tokens}", instructions, max_new_tokens)


def _selfgen_rows(
    model_name: str, name: str, instructions: list[str], max_new_tokens: int
) -> tuple[tuple[str, str], ...]:
    """Greedy answers of the unaligned model, generated once and cached as JSONL under runs/."""
    from shared.evaluation.refusal import is_refusal
    from shared.model_zoo import model_key

    path = SELFGEN_CACHE / model_key(model_name) / f"{name}.jsonl"
    if not path.is_file():
        import torch

        from shared.evaluation.generation import generate_greedy
        from shared.model_zoo import load_base_model

        loaded = load_base_model(model_name, aligned=False)
        with torch.inference_mode():
            answers = generate_greedy(
                loaded.model,
                loaded.tokenizer,
                instructions,
                max_new_tokens=max_new_tokens,
                desc=f"{name} answers",
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        with tmp.open("w", encoding="utf-8") as handle:
            for instruction, answer in zip(instructions, answers, strict=True):
                handle.write(json.dumps({"instruction": instruction, "response": answer.strip()}) + "\n")
        tmp.replace(path)
    pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    # an answer that refuses is not the writer's compliant style; a near-empty one teaches nothing
    return tuple(
        (p["instruction"], p["response"])
        for p in pairs
        if len(p["response"]) >= 40 and not is_refusal(p["response"])
    )


def load_probe_sources(
    model_name: str,
    data_dir: Path,
    pools: DataPools,
    selfgen_count: int,
    seed: int,
    selfgen_benign_count: int = 0,
) -> dict[str, ProbeSource]:
    probe = pools.probe
    sources = {
        "maliciousgen": ProbeSource(
            "maliciousgen", 1, tuple((p.instruction, p.harmful) for p in probe.harmful)
        ),
        "helpful": ProbeSource("helpful", 0, tuple((x.instruction, x.response) for x in probe.helpful)),
        "alpaca": ProbeSource("alpaca", 0, tuple((x.instruction, x.response) for x in probe.alpaca)),
        "dolly": ProbeSource("dolly", 0, tuple((x.instruction, x.response) for x in probe.dolly)),
    }
    if selfgen_count > 0:
        rows = selfgen_harmful_rows(model_name, data_dir, pools, selfgen_count, seed)
        sources["selfgen_harmful"] = ProbeSource("selfgen_harmful", 1, rows)
    if selfgen_benign_count > 0:
        rows = selfgen_benign_rows(model_name, pools, selfgen_benign_count)
        sources["selfgen_benign"] = ProbeSource("selfgen_benign", 0, rows)
    return sources

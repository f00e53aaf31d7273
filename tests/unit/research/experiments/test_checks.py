"""The experiments' qualitative checks and E6's outcomes, from result rows."""

import pytest

from research.experiments.e3_main import closer_to_clean
from research.experiments.e4_ratio import checks as e4_checks
from research.experiments.e6_adaptive import malicious_factor, outcomes


def row(defense, ratio, harm, seed=1, **extra):
    return {
        "defense": defense,
        "malicious_ratio": ratio,
        "harm_preference": harm,
        "harmless_rate": 0.5,
        "seed": seed,
        "rounds": 2,
        **extra,
    }


ROWS = [
    {**row("none (start model)", 0.0, 0.0), "rounds": 0},
    row("fedavg", 0.0, 0.10),
    row("fedavg", 0.5, 0.30),
    row("shadow", 0.5, 0.12),  # 0.02 from clean, attacked FedAvg 0.20 away
    row("median", 0.5, -0.15),  # 0.25 away on the other side: not closer
    row("krum", 0.3, 0.0),  # FedAvg at 0.3 not run: no verdict
]


def test_closer_to_clean_compares_distances_to_clean_fedavg_of_the_same_seed():
    assert closer_to_clean(ROWS, ["fedavg", "shadow", "median", "krum"]) == {
        "seed=1 ratio=0.5 defense=shadow": True,
        "seed=1 ratio=0.5 defense=median": False,
    }


def test_e4_checks_fedavg_is_harmed_at_its_highest_ratio():
    out = e4_checks(ROWS, ["fedavg", "shadow"])
    assert out == {"seed=1 fedavg harmed at the highest ratio": True, "seed=1 ratio=0.5 defense=shadow": True}


def test_e6_outcomes_and_the_malicious_clients_mean_factor():
    attacked = row(
        "shadow",
        0.5,
        0.2,
        attack_label="scaling (x3)",
        clients={"c0": {"malicious": False}, "c1": {"malicious": True}},
        round_summaries=[{"factors": {"c0": 1.0, "c1": 0.0}}, {"factors": {"c0": 1.0, "c1": 0.5}}],
    )
    assert malicious_factor(attacked) == pytest.approx(0.25)
    assert malicious_factor(row("fedavg", 0.5, 0.3)) is None
    [outcome] = outcomes([ROWS[1], attacked])
    assert outcome["attack"] == "scaling (x3)" and outcome["still_harms"] is True
    assert outcome["harm_preference_minus_clean"] == pytest.approx(0.1)

"""The typed contracts between the aggregator's modules: scores, inputs, trust, settings, strategy options."""

from __future__ import annotations

import json
import re

import pytest

from services.aggregator.inputs import Inputs
from services.aggregator.scores import UpdateScores
from services.aggregator.scoring import PROBE_KINDS, PROBE_POLICIES, SNAPSHOTS_OF


def test_inputs_keep_the_strings_the_store_settings_and_results_use():
    assert [i.value for i in Inputs] == ["steps", "shadow", "verified", "audit"]
    assert (
        Inputs.SHADOW == "shadow"
        and json.dumps({Inputs.STEPS: [Inputs.VERIFIED]}) == '{"steps": ["verified"]}'
    )
    # callers that still look up by the plain string (the simulation, the experiments) find the same entry
    assert PROBE_POLICIES.get("verified") == ("all_layers", "module_norms", "first_B")
    assert PROBE_KINDS["verified"] == (Inputs.VERIFIED, Inputs.STEPS) and SNAPSHOTS_OF.get("audit") is None


OLD_JSON = [  # rows as stored before UpdateScores existed
    {"steps": [0.1, 0.9]},
    {"shadow": [0.2], "audit": [0.05]},
    {"verified": [0.7], "steps": [0.3, 0.4]},
    {"error": "TimeoutError: "},
    {"audit_error": "ConnectError: refused"},
    {},
]


@pytest.mark.parametrize("stored", OLD_JSON)
def test_stored_scores_round_trip_through_their_old_json(stored):
    scores = UpdateScores.from_json(json.loads(json.dumps(stored)))
    assert scores.to_json() == stored


def test_scores_read_as_each_level_reads_them():
    scores = UpdateScores.from_json({"verified": [0.7], "steps": [0.3, 0.4], "audit": [0.05]})
    assert scores.of(Inputs.VERIFIED) == (0.7,) and scores.of(Inputs.STEPS) == (0.3, 0.4)
    assert scores.of(Inputs.SHADOW) is None and scores.of(Inputs.AUDIT) == (0.05,)
    assert UpdateScores.from_json({"audit": []}).audit is None  # as `(entry.get("audit") or [None])[0]`
    # probe and audit results of one update merge; a later field replaces, an unset one keeps
    merged = UpdateScores(steps=(0.1,), error="x").merged(UpdateScores(audit=0.2, steps=(0.3,)))
    assert merged == UpdateScores(steps=(0.3,), audit=0.2, error="x")
    assert UpdateScores.probed({"shadow": [1, 0]}) == UpdateScores(shadow=(1.0, 0.0))
    with pytest.raises(ValueError, match="steps is not a list"):
        UpdateScores.from_json({"steps": 0.3})


# -- each level's trust state: typed inside the level, the same JSON in the store ------------------------

STORED_TRUST = [  # (level, one client's trust JSON as stored before the states were typed)
    ("step", {"alpha": 112.95, "beta": 48.95}),
    ("client", {"sum": 1.25, "rounds": 2}),
    ("verified", {"sum": 0.5, "rounds": 1}),
    ("evidence", {"records": [{"factor": 1.0, "malicious": False}, {"factor": 0.0, "malicious": True}]}),
    ("evidence", {"frozen": "malicious", "records": [{"factor": 0.0, "malicious": True}] * 3}),
    (
        "evidence",
        {
            "frozen": "benign",
            "frozen_factor": 0.9,
            "since_frozen": 2,
            "records": [{"factor": 0.9, "malicious": False}] * 3,
        },
    ),
    ("audit+client", {"probe": {"sum": 1.25, "rounds": 2}}),
]


@pytest.mark.parametrize(("level", "stored"), STORED_TRUST)
def test_every_state_reads_its_stored_json_and_writes_it_back_unchanged(level, stored):
    from services.aggregator.defenses.audit_level import AuditedTrust
    from services.aggregator.defenses.client_level import MeanTrust
    from services.aggregator.defenses.evidence_level import EvidenceTrust
    from services.aggregator.defenses.step_level import StepTrust

    state_type = {
        "step": StepTrust,
        "client": MeanTrust,
        "verified": MeanTrust,
        "evidence": EvidenceTrust,
        "audit+client": AuditedTrust,
    }[level]
    assert state_type.from_json(json.loads(json.dumps(stored))).to_json() == stored


def test_a_frozen_level_leaves_the_stored_trust_as_it_was():
    """From R_p on, the step and client levels write back what they read, an unseen client included."""
    from services.aggregator.defenses import DefenseSettings, ProbeEvidence, make_defense

    settings = DefenseSettings(freeze_round=2)
    evidence = ProbeEvidence("c", 16, 8, step_scores=[0.9, 0.9])
    for name, stored, factor in (
        ("step", {"alpha": 3.0, "beta": 1.0}, 0.75),
        ("client", {"sum": 1.5, "rounds": 2}, 0.75),
        ("step", {}, 0.5),  # first seen after the freeze: the prior mean, and still no state
        ("client", {}, 1.0),
    ):
        decision = make_defense(name, settings).decide_client(2, evidence, stored)
        assert (decision.factor, decision.trust, decision.probed) == (factor, stored, False)


@pytest.mark.parametrize(
    ("level", "stored", "why"),
    [
        ("step", {"alpha": "1"}, "alpha='1' is not a number"),
        ("client", {"sum": 1.0, "rounds": 1.5}, "rounds=1.5 is not an integer"),
        ("evidence", {"frozen": "maybe", "records": []}, "frozen='maybe'"),
        ("evidence", {"records": [1.0]}, "records is not a list of records"),
        ("audit+step", {"probe": [1]}, "probe is not an object"),
    ],
)
def test_a_malformed_stored_state_is_a_clear_error(level, stored, why):
    from services.aggregator.defenses import ProbeEvidence, make_defense

    evidence = ProbeEvidence("c", 16, 8, step_scores=[0.1], shadow_scores=[0.1])
    with pytest.raises(ValueError, match=re.escape(why)):
        make_defense(level).decide_client(0, evidence, stored)


# -- AggregatorSettings: defense split into a level and an aggregation rule, checked at construction -----


def test_defense_splits_into_a_level_and_an_aggregation_rule():
    from services.aggregator.defenses import DefenseSettings
    from services.aggregator.settings import AggregatorSettings

    level = AggregatorSettings(defense="verified", defense_settings=DefenseSettings(aggregator="median"))
    assert (level.level, level.aggregation_rule, level.is_verified_level) == ("verified", "median", True)
    baseline = AggregatorSettings(defense="krum", strategy_options={"num_attackers": 1})
    assert (baseline.level, baseline.aggregation_rule, baseline.is_level) == (None, "krum", False)


def test_the_settings_refuse_a_bad_configuration_when_built(monkeypatch):
    from pydantic import ValidationError

    from services.aggregator.defenses import DefenseSettings
    from services.aggregator.settings import AggregatorSettings

    cases = [
        ({"defense": "krumm"}, "unknown defense 'krumm'"),
        ({"defense": "krum"}, "krum: unknown options [], missing required ['num_attackers']"),
        (
            {"defense": "median", "strategy_options": {"even": "upper"}},
            "median: invalid options: even: Input",
        ),
        ({"defense": "krum", "strategy_options": {"num_attackers": True}}, "num_attackers: Input should be"),
        (  # a level's options are its aggregator's
            {
                "defense": "step",
                "defense_settings": DefenseSettings(aggregator="trimmed_mean"),
                "strategy_options": {"num_attackers": 1},
            },
            "trimmed_mean: unknown options ['num_attackers']",
        ),
        ({"defense": "shadow"}, "only under trusted execution"),
    ]
    for kwargs, why in cases:
        with pytest.raises(ValidationError, match=re.escape(why)):
            AggregatorSettings(**kwargs)
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_DEFENSE", "flame")  # the env the chart sets, read at start-up
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_STRATEGY_OPTIONS", '{"noise_factor": 0.01}')
    assert AggregatorSettings().strategy_options == {"noise_factor": 0.01}
    monkeypatch.setenv("SAFE_FEDLLM_AGGREGATOR_STRATEGY_OPTIONS", '{"noise": 0.01}')
    with pytest.raises(ValidationError, match=re.escape("flame: unknown options ['noise']")):
        AggregatorSettings()


# -- strategy options: a typed model registered with each strategy ----------------------------------------


def test_every_strategy_is_registered_with_an_options_model_that_matches_its_constructor():
    import inspect

    from services.aggregator.strategies import STRATEGIES, options_model, strategy_options

    for name, cls in STRATEGIES.items():
        parameters = {
            k: p
            for k, p in inspect.signature(cls.__init__).parameters.items()
            if k not in ("self", "args", "kwargs")
        }
        assert set(strategy_options(name)) == set(parameters) == set(options_model(name).model_fields), name


def test_registering_refuses_a_model_that_disagrees_with_the_constructor():
    from services.aggregator.strategies import StrategyOptions, register_strategy
    from services.aggregator.strategies.median import Median

    class Stale(StrategyOptions):
        even: str = "lower"  # the constructor's default is "mean"

    class Renamed(Median):
        name = "median_renamed"

    with pytest.raises(ValueError, match="already registered"):
        register_strategy(Median, Stale)
    with pytest.raises(TypeError, match="option 'even' has another default in Stale"):
        register_strategy(Renamed, Stale)
    with pytest.raises(TypeError, match=re.escape("constructor options ['even'] != StrategyOptions []")):
        register_strategy(Renamed)


def test_make_strategy_validates_options_against_the_model():
    from services.aggregator.strategies import make_strategy, takes_option

    krum = make_strategy("multi_krum", num_attackers=1, num_selected=2)
    assert (krum.num_attackers, krum.num_selected) == (1, 2)
    assert make_strategy("norm_clipping", bound=1).bound == 1.0  # an int is a float; types stay exact
    for options, why in (
        ({"num_attackers": 1.0}, "num_attackers: Input should be a valid integer"),
        ({"num_attackers": "1"}, "num_attackers: Input should be a valid integer"),
        ({"num_attackers": -1}, "num_attackers must be an integer >= 0"),  # the constructor checks values
    ):
        with pytest.raises(ValueError, match=re.escape(why)):
            make_strategy("krum", **options)
    with pytest.raises(ValueError, match="fltrust: invalid options: server_update: Input should be callable"):
        make_strategy("fltrust", server_update=3)
    with pytest.raises(ValueError, match="Unknown strategy 'nope'"):
        make_strategy("nope")
    assert takes_option("dnc", "num_attackers") and not takes_option("fedavg", "num_attackers")
    assert not takes_option("nope", "trim")

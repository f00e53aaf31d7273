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

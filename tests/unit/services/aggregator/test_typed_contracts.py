"""The typed contracts between the aggregator's modules: scores, inputs, trust, settings, strategy options."""

from __future__ import annotations

import json

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

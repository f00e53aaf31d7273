"""Which probe a level gets when it names none: snapshot levels need first_B, the verified level prefers the
whole update; among equals the newest wins."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.aggregator.scoring import PROBE_POLICIES
from services.probe_service.scoring import ProbeBank, ProbeNotFound, ProbeSelector
from shared.config import LoraSettings
from shared.features import FeatureSpec
from tests.toy_lora import R, export_toy_probe

from .conftest import adapter_state


def _export(root, probe_id: str, policy: str, normalize: str, fingerprint: str = "f" * 16) -> None:
    spec = FeatureSpec.for_adapter(adapter_state(), policy, normalize)  # type: ignore[arg-type]
    export_toy_probe(
        root / probe_id, np.ones(spec.dim, np.float32), spec, fingerprint=fingerprint, threshold=0.5
    )
    time.sleep(0.01)  # created_at orders the probes


def test_levels_get_the_feature_they_can_read(tmp_path) -> None:
    _export(tmp_path, "whole", "all_layers", "l2")
    _export(tmp_path, "layer0", "first_B", "l2")  # the newest: chosen when the policy does not matter
    bank = ProbeBank(tmp_path)
    shape = ("toy-model", R, ("q_proj", "v_proj"))
    assert bank.resolve(ProbeSelector(None, *shape)).probe_id == "layer0"
    for inputs, expected in (("steps", "layer0"), ("shadow", "layer0"), ("verified", "whole")):
        chosen = bank.resolve(ProbeSelector(None, *shape, policies=PROBE_POLICIES[inputs]))
        assert chosen.probe_id == expected, inputs
    with pytest.raises(ProbeNotFound):
        bank.resolve(ProbeSelector(None, *shape, policies=("module_norms",)))
    # an explicit id wins over the preference (the operator chose)
    named = ProbeSelector("layer0", *shape, policies=PROBE_POLICIES["verified"])
    assert bank.resolve(named).probe_id == "layer0"


def test_a_defense_gets_only_a_probe_made_for_its_exact_base_weights(tmp_path) -> None:
    from services.aggregator.inputs import Inputs
    from services.aggregator.probe_binding import resolve_probe

    aligned, realigned = "a" * 16, "b" * 16
    _export(tmp_path, "old", "first_B", "l2", fingerprint=aligned)
    _export(tmp_path, "new", "first_B", "l2", fingerprint=realigned)  # newest, but another base's
    bank = ProbeBank(tmp_path)
    lora = LoraSettings(r=R)
    # By fingerprint, not by recency: the newest probe was made for another alignment of the same model.
    common = {"model": "toy-model", "lora": lora, "inputs": Inputs.STEPS}
    assert resolve_probe(bank, **common, base_fingerprint=aligned).probe_id == "old"
    assert resolve_probe(bank, **common, base_fingerprint=realigned).probe_id == "new"
    with pytest.raises(ProbeNotFound, match="base weights cccccccccccccccc"):
        resolve_probe(bank, **common, base_fingerprint="c" * 16)
    # An explicit id is checked too: the operator's choice must still fit the weights.
    with pytest.raises(ProbeNotFound, match=f"made for base weights {realigned}, this model is {aligned}"):
        resolve_probe(bank, **common, base_fingerprint=aligned, probe_id="new")
    assert resolve_probe(bank, **common, base_fingerprint=realigned, probe_id="new").probe_id == "new"
    # A REST request cannot know the weights: without a fingerprint the newest fitting probe answers.
    assert bank.resolve(ProbeSelector(None, "toy-model", R, ("q_proj", "v_proj"))).probe_id == "new"


KINDS = ("verified", "steps")  # the verified level's: its own feature, and reported step rows


def test_a_whole_update_probe_scores_the_update_not_the_reported_layer0_rows() -> None:
    from services.aggregator.scoring import probe_inputs
    from shared.updates import ClientUpdate

    issued, adapter = adapter_state(0), adapter_state(1)
    layer0 = FeatureSpec.for_adapter(adapter, "first_B")
    rows = np.stack([layer0.raw(adapter)] * 2)
    update = ClientUpdate("c", 0, 8, adapter, b_keys=list(layer0.keys), b_snapshots=rows)
    whole = FeatureSpec.for_adapter(adapter, "module_norms", "center")
    inputs = probe_inputs(update, whole, issued, KINDS)
    assert list(inputs) == ["verified"]  # layer-0 rows cannot be read by this probe
    np.testing.assert_array_equal(inputs["verified"][0], whole.raw(adapter, issued))
    assert set(probe_inputs(update, layer0, issued, KINDS)) == {"verified", "steps"}

"""A killed probe build resumes only onto the same plan and the same base weights: a new alignment adapter
keeps the model's name (and so the config) but changes every trajectory."""

import numpy as np

from probes.dataset import ProbeDatasetConfig, _checkpoint, _load_checkpoint


def test_a_checkpoint_resumes_only_with_the_same_config_and_fingerprint(tmp_path):
    path = tmp_path / "data.partial.npz"
    config = ProbeDatasetConfig()
    done = {0: {"first_B": np.ones((5, 3), np.float32)}, 2: {"first_B": np.zeros((5, 3), np.float32)}}
    assert _load_checkpoint(path, config, "aaaa") == {}  # nothing yet
    _checkpoint(path, config, "aaaa", done)
    resumed = _load_checkpoint(path, config, "aaaa")
    assert sorted(resumed) == [0, 2] and np.array_equal(resumed[0]["first_B"], done[0]["first_B"])
    assert _load_checkpoint(path, config, "bbbb") == {}  # another alignment of the same model
    assert _load_checkpoint(path, config.model_copy(update={"seed": 1}), "aaaa") == {}
    np.savez(
        path, config=np.asarray(config.model_dump_json()), indices=np.asarray([0]), f0=done[0]["first_B"]
    )
    assert _load_checkpoint(path, config, "aaaa") == {}  # written before fingerprints were recorded

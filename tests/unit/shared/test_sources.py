import json

import pytest

from shared.data import sources
from shared.data.sources import DataFileError


def test_truncated_json_is_a_clear_error(tmp_path):
    (tmp_path / "fedllm_attack").mkdir()
    (tmp_path / "fedllm_attack" / "helpfulQA.json").write_text('[{"instruction": "a", "respo')
    with pytest.raises(DataFileError, match="not valid JSON"):
        sources.load_helpful(tmp_path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataFileError, match="advbench"):
        sources.load_advbench_goals(tmp_path)


def test_unpaired_harmful_files_are_rejected(tmp_path):
    folder = tmp_path / "fedllm_attack"
    folder.mkdir()
    (folder / "maliciousQA.json").write_text(json.dumps([{"instruction": "q1", "response": "a"}]))
    (folder / "benignQA.json").write_text(json.dumps([{"instruction": "q2", "response": "b"}]))
    with pytest.raises(DataFileError, match="disagree"):
        sources.load_harmful_pairs(tmp_path)

"""The experiments' runner: resume from the last finished configuration, never mix settings."""

import json

import pytest

from research.experiments.runner import Configuration, SettingsMismatch, partial_path, run_configurations


def test_a_killed_run_resumes_after_its_last_finished_configuration(tmp_path):
    output = tmp_path / "exp.json"
    calls: list[str] = []

    def make(name: str, fail: bool = False) -> Configuration:
        def run() -> list[dict]:
            calls.append(name)
            if fail:
                raise KeyboardInterrupt  # the run is killed during this configuration
            return [{"value": name}]

        return Configuration(name, run)

    with pytest.raises(KeyboardInterrupt):
        run_configurations("exp", [make("a"), make("b", fail=True), make("c")], output, {"s": 1}, "cmd")
    assert not output.exists()
    saved = json.loads(partial_path(output).read_text())
    assert list(saved["done"]) == ["a"]
    result = run_configurations(
        "exp", [make("a"), make("b"), make("c")], output, {"s": 1}, "cmd", progress=False
    )
    assert calls == ["a", "b", "b", "c"]  # a was not run again
    assert [r["value"] for r in result["rows"]] == ["a", "b", "c"]
    assert [r["configuration"] for r in result["rows"]] == ["a", "b", "c"]
    assert result["command"] == "cmd" and result["settings"] == {"s": 1}
    assert json.loads(output.read_text()) == result
    assert not partial_path(output).exists()


def test_a_partial_file_from_other_settings_is_refused_unless_fresh(tmp_path):
    output = tmp_path / "exp.json"
    partial_path(output).write_text(json.dumps({"settings": {"s": 1}, "done": {"a": [{"value": "old"}]}}))
    configs = [Configuration("a", lambda: [{"value": "new"}])]
    with pytest.raises(SettingsMismatch, match="--fresh"):
        run_configurations("exp", configs, output, {"s": 2}, "cmd", progress=False)
    result = run_configurations("exp", configs, output, {"s": 2}, "cmd", fresh=True, progress=False)
    assert result["rows"][0]["value"] == "new"


def test_a_finished_result_is_not_repeated_and_a_new_configuration_is_added(tmp_path):
    output = tmp_path / "exp.json"
    calls: list[str] = []

    def make(name: str) -> Configuration:
        return Configuration(name, lambda: calls.append(name) or [{"value": name}])

    first = run_configurations("exp", [make("a"), make("b")], output, {"s": 1}, "cmd", progress=False)
    again = run_configurations(
        "exp", [make("a"), make("b"), make("c")], output, {"s": 1}, "cmd", progress=False
    )
    assert calls == ["a", "b", "c"]  # only the configuration the finished result lacked
    assert again["rows"][:2] == first["rows"] and again["rows"][2]["value"] == "c"
    with pytest.raises(SettingsMismatch, match="--fresh"):  # a finished result of other settings is kept
        run_configurations("exp", [make("a")], output, {"s": 2}, "cmd", progress=False)
    assert json.loads(output.read_text()) == again


def test_configuration_names_must_be_unique(tmp_path):
    configs = [Configuration("a", list), Configuration("a", list)]
    with pytest.raises(ValueError, match="unique"):
        run_configurations("exp", configs, tmp_path / "x.json", {}, "cmd", progress=False)

"""The experiment group's shared settings reach every federated experiment; --quick keeps the cache."""

from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from services.cli.experiment_command import Federation, _federation, experiment_app


def test_group_settings_are_the_federation_and_quick_keeps_only_the_cache():
    ctx = SimpleNamespace(obj=Federation(rounds=3, clients_per_round=4, cache_dir=Path("somewhere")))
    assert _federation(ctx, quick=False).rounds == 3  # type: ignore[arg-type]
    quick = _federation(ctx, quick=True)  # type: ignore[arg-type]
    assert (quick.model, quick.rounds, quick.cache_dir) == ("tiny-llama", 2, Path("somewhere"))


def test_the_cache_directory_reaches_the_simulation_config_and_no_cache_leaves_it_out():
    assert Federation(cache_dir=Path("runs/c")).config(progress=False).cache_dir == "runs/c"
    assert Federation().config(progress=False).cache_dir is None
    config = Federation(max_new_tokens=24, eval_batch_size=32).config(progress=False)
    assert (config.eval.max_new_tokens, config.eval.batch_size, config.eval.progress) == (24, 32, False)


def test_group_options_come_before_the_experiment():
    result = CliRunner().invoke(experiment_app, ["--rounds", "2", "--no-cache", "e3_main", "--help"])
    assert result.exit_code == 0, result.output
    assert "--seed" in result.output and "--rounds" not in result.output  # per-experiment options only

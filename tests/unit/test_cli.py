import pytest
from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()


def test_top_level_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("align", "simulate", "demo"):
        assert command in result.output


@pytest.mark.parametrize("command", ["align", "simulate", "demo"])
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--model" in result.output


def test_unknown_model_is_a_clear_error():
    from shared.model_zoo import load_base_model

    with pytest.raises(
        ValueError, match=r"not a known name \(smollm2-135m, tiny-llama\) nor a checkpoint directory"
    ):
        load_base_model("gpt-17")


def test_simulate_defaults_are_the_config_models():
    from research.simulation import SimulationConfig
    from services.cli.simulation_options import simulation_config

    assert simulation_config() == SimulationConfig()
    given = simulation_config(rounds=3, lr_max=5e-4, eval_pairs=7)
    assert (given.federation.num_rounds, given.federation.lr.lr_max, given.eval.num_pairs) == (3, 5e-4, 7)
    assert given.federation.lr.lr_min == SimulationConfig().federation.lr.lr_min

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

    with pytest.raises(ValueError, match="known models: smollm2-135m, tiny-llama"):
        load_base_model("gpt-17")

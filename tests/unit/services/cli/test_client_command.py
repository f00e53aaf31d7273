"""`safe-fedllm client`: refusals a participant meets before any network call, as its operator sees them."""

from __future__ import annotations

from typer.testing import CliRunner

from services.cli.main import app

runner = CliRunner()


def test_plain_http_is_refused_without_the_flag(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"instruction": "q", "response": "a"}\n')
    result = runner.invoke(
        app, ["client", "run", "--server", "http://agg:8080", "--client-id", "c1", "--data", str(data)]
    )
    assert result.exit_code == 2
    assert "http://agg:8080 is plain http" in result.output and "--insecure-http" in result.output


def test_bad_data_fails_fast_without_printing_the_row(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"instruction": "secret instruction text"}\n')
    result = runner.invoke(
        app,
        ["client", "run", "--server", "https://agg", "--client-id", "c1", "--data", str(data), "--state-dir",
         str(tmp_path / "state")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "rows.jsonl:1: 'response' must be a non-empty string" in result.output
    assert "secret instruction text" not in result.output
    assert not (tmp_path / "state").exists()  # nothing was enrolled or written

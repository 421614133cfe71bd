from click.testing import CliRunner

from scanner import __version__
from scanner.cli import cli


def test_version_and_help_describe_the_product(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["--version"]).output.strip() == f"deepscan, version {__version__}"
    help_text = runner.invoke(cli, ["--help"]).output
    assert "deepfake" in help_text
    assert "db" in help_text


def test_unknown_command_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["frobnicate"])
    assert result.exit_code == 2

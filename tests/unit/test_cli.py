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


def test_a_producer_sends_chunks_without_loading_torch() -> None:
    # `deepscan scan` with a broker only records and sends: loading torch and torchvision would add
    # seconds to every scan command. The worker side loads them when it starts.
    import subprocess
    import sys

    probe = (
        "import sys; import scanner.cli, scanner.cli.scan, workers.backend, workers.tasks; "
        "from workers.backend import PipelinedChunkSender; "
        "print(sorted(m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

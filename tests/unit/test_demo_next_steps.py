"""The commands `deepscan demo` prints at the end parse as printed: real paths, quoted, and the
database repeated when it came from the command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from deepscan.cli import cli
from deepscan.cli.demo import next_steps


def parses(line: str) -> None:
    """Parse one printed `deepscan …` line with the real CLI, down to its subcommand's options."""
    args = shlex.split(line)[1:]
    ctx = cli.make_context("deepscan", args)
    name, command, rest = cli.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
    assert command is not None, line
    command.make_context(name or "", rest, parent=ctx).close()


@pytest.mark.parametrize("database_url", [None, "sqlite:////tmp/some where/demo.db"])
def test_every_printed_command_parses(tmp_path: Path, database_url: str | None) -> None:
    home = tmp_path / "with space"
    report = {
        "checkpoint": str(home / "demo.safetensors"),
        "data": str(home / "data"),
        "job_id": 7,
        "videos": [{"item_id": 12, "flagged_ranges_s": [[1.0, 2.0]]}],
        "top_flagged": [{"item_id": 3}],
    }
    text = next_steps(report, database_url=database_url)
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("deepscan ")]
    assert [c.split()[1] for c in commands] == ["results", "show", "scan"]
    for line in commands:
        parses(line)
        if database_url:
            assert shlex.quote(database_url) in line
    assert shlex.quote(str(home / "demo.safetensors")) in text


def test_a_mistyped_command_would_not_parse() -> None:
    with pytest.raises(click.UsageError):
        parses("deepscan results --verdict maybe")


def test_a_demo_checkpoint_from_an_older_recipe_is_retrained(tmp_path: Path) -> None:
    from deepscan.cli.demo import _stale_reason
    from scanner.faces import FaceView
    from tests.training_helpers import tiny_meta, write_tiny_checkpoint

    old = tmp_path / "old.safetensors"
    write_tiny_checkpoint(old)  # written before face views: trained on whole images
    assert _stale_reason(old, "hog") == "was trained on whole image (no face detection), an older demo recipe"
    assert _stale_reason(old, "none") is None
    assert _stale_reason(tmp_path / "missing.safetensors", "hog") is None
    meta = tiny_meta()
    meta.face_view = FaceView.named("hog")
    current = tmp_path / "current.safetensors"
    from scanner.checkpoint import save_checkpoint
    from tests.training_helpers import tiny_model

    save_checkpoint(current, tiny_model(), meta)
    assert _stale_reason(current, "hog") is None

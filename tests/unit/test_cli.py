from pathlib import Path

import pytest
from click.testing import CliRunner

from deepscan.cli import cli
from scanner import __version__


def test_version_and_help_describe_the_product(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["--version"]).output.strip() == f"deepscan, version {__version__}"
    help_text = runner.invoke(cli, ["--help"]).output
    assert "deepfake" in help_text
    assert "db" in help_text


def test_each_command_loads_from_the_module_named_for_it(runner: CliRunner) -> None:
    import importlib

    from deepscan.cli import COMMAND_MODULES

    defined = {
        command.name: module
        for module in {m for modules in COMMAND_MODULES.values() for m in modules}
        for command in importlib.import_module(module).COMMANDS
    }
    assert defined == {name: modules[0] for name, modules in COMMAND_MODULES.items()}
    assert set(runner.invoke(cli, ["jobs", "--help"]).output.split()) >= {"cancel", "reconcile", "list", "show"}
    for name in COMMAND_MODULES:  # each one's --help works, with the global options added
        assert "--database-url" in runner.invoke(cli, [name, "--help"]).output, name


def test_a_scan_loads_no_other_command_nor_plotting() -> None:
    # `deepscan scan` runs often and briefly: the training, web and plotting code cost it 0.3-0.5 s,
    # the table renderer (tabulate) another 0.03-0.06 s when it prints JSON.
    import subprocess
    import sys

    probe = (
        "import sys; from deepscan.cli import cli; cli.get_command(None, 'scan'); "
        "print(sorted(m for m in sys.modules if m.startswith(('deepscan.cli.', 'matplotlib', 'training', 'tabulate'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == str(
        ["deepscan.cli.context", "deepscan.cli.options", "deepscan.cli.output", "deepscan.cli.scan"]
    )


def test_unknown_command_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["frobnicate"])
    assert result.exit_code == 2


def test_a_producer_sends_chunks_without_loading_torch() -> None:
    # `deepscan scan` with a broker only records and sends: loading torch and torchvision would add
    # seconds to every scan command, an HTTP client (requests, for webhooks) 0.05 s. The worker side
    # loads them when it starts.
    import subprocess
    import sys

    probe = (
        "import sys; import deepscan.cli, deepscan.cli.scan, workers.backend, workers.tasks; "
        "from workers.backend import PipelinedChunkSender; "
        "print(sorted(m for m in ('torch', 'torchvision', 'cv2', 'requests') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_no_faces_against_a_face_trained_checkpoint_warns_from_its_header_without_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    from scanner.checkpoint import CheckpointMeta, save_checkpoint
    from scanner.detector import Preprocessing, build_model
    from scanner.faces import FaceView

    checkpoint = tmp_path / "faces.safetensors"
    meta = CheckpointMeta(arch="resnet18", preprocessing=Preprocessing(image_size=64), threshold=0.5,
                          target_fpr=0.01, face_view=FaceView.named("haar"))  # fmt: skip
    save_checkpoint(checkpoint, build_model("resnet18", pretrained="none"), meta)
    probe = (
        "import sys, dataclasses; from pathlib import Path\n"
        "from deepscan.cli.scan import _warn_on_face_view_override\n"
        "from scanner.jobs import ScanOptions\n"
        "from scanner.settings import Settings\n"
        f"settings = dataclasses.replace(Settings.from_env({{}}), checkpoint=Path({str(checkpoint)!r}))\n"
        "_warn_on_face_view_override(settings, ScanOptions(faces=False))\n"
        "_warn_on_face_view_override(settings, ScanOptions(faces=True))\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert done.stderr.count("warning: --no-faces scores whole images") == 1, done.stderr
    assert "faces.safetensors was trained on" in done.stderr


def test_each_worker_process_is_its_own_celery_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """`celery inspect ping` tells workers apart by node name: one per process, the host name expanded."""
    import os
    import socket

    from deepscan.cli.scan import worker_node_name

    names = set()
    for pid in (101, 102):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        names.add(worker_node_name("deepscan"))
    assert names == {f"deepscan-deepscan-{pid}@{socket.gethostname()}" for pid in (101, 102)}
    assert worker_node_name("deepscan", "deepscan-worker@%h") == f"deepscan-worker@{socket.gethostname()}"

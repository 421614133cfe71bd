"""Small files that are huge or slow once decoded end `done` or `error` with a reason, through the real worker path.

Each file is made by the test (tests/media_factory.py) and scanned by a real `python -m deepscan scan`
subprocess in embedded mode (fetch, sniff, decode or sample frames, faces, preprocessing, the model,
the database). The child's peak RSS is printed, not asserted: memory and time limits live in
bench/memory.py, since no test may depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import media_factory as mf
from tests.pipeline_helpers import deepscan_env, items_of, write_tiny_checkpoint

HANG_GUARD_S = 240.0  # far above the seconds this takes; it only stops a hung child


def write_hostile_folder(folder: Path) -> dict[str, tuple[str, str | None]]:
    """The hostile files of issue 8, each with the status it must end in and the start of its error."""
    mf.write_flat_png(folder / "bomb_7999x7999.png", (7999, 7999))
    mf.write_flat_png(folder / "strip_256000x250.png", (256_000, 250))
    mf.write_mjpeg_avi(folder / "frames_9000x9000.avi", (9000, 9000), frames=8)
    mf.write_mjpeg_avi(folder / "frames_3840x2160.avi", (3840, 2160), frames=8, fps=1.0)
    mf.write_long_gop_video(folder / "one_keyframe_100000_frames.avi", frames=100_000)
    return {
        "bomb_7999x7999.png": ("done", None),
        "strip_256000x250.png": ("done", None),
        "frames_9000x9000.avi": ("error", "video frames are 9000x9000, over the 33,177,600-pixel limit"),
        "frames_3840x2160.avi": ("done", None),
        "one_keyframe_100000_frames.avi": ("error", "video keyframes are too far apart: sampling 120 frames"),
    }


def scan_in_child(folder: Path, home: Path, checkpoint: Path) -> tuple[int, dict[str, object], int]:
    """`deepscan scan FOLDER` in a child process: its exit code, its JSON summary and its peak RSS in KiB."""
    env = deepscan_env(DEEPSCAN_HOME=str(home), DEEPSCAN_CHECKPOINT=str(checkpoint), DEEPSCAN_DEVICE="cpu")
    command = [sys.executable, "-m", "deepscan", "scan", str(folder), "--format", "json"]
    log = home / "scan.log"
    with log.open("wb") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    guard = threading.Timer(HANG_GUARD_S, child.kill)
    guard.start()
    try:
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not every child's so far
    finally:
        guard.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text(errors="replace")
    assert child.returncode in (0, 3), output[-3000:]
    return child.returncode, json.loads(output.strip().splitlines()[-1]), usage.ru_maxrss


@pytest.mark.slow
def test_hostile_files_end_done_or_error_with_a_reason(tmp_path: Path) -> None:
    folder, home = tmp_path / "hostile", tmp_path / "home"
    home.mkdir()
    expected = write_hostile_folder(folder)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")

    exit_code, summary, peak_rss_kib = scan_in_child(folder, home, checkpoint)

    print(f"\nscan child peak RSS: {peak_rss_kib / 1024:.0f} MiB over {len(expected)} hostile files")
    assert exit_code == 3  # done, with item errors
    items = items_of(f"sqlite:///{home / 'deepscan.db'}", int(str(summary["job_id"])))
    outcomes = {Path(item.url.removeprefix("file://")).name: item for item in items}
    assert sorted(outcomes) == sorted(expected)
    for name, (status, reason) in expected.items():
        item = outcomes[name]
        assert item.status == status, (name, item.error)
        if reason is None:
            assert item.score is not None
        else:
            assert item.error is not None
            assert item.error.startswith(reason), (name, item.error)
            assert "\n" not in item.error
    assert (outcomes["frames_3840x2160.avi"].width, outcomes["frames_3840x2160.avi"].height) == (3840, 2160)

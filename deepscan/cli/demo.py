"""`deepscan demo`: synthetic media, a small demo checkpoint, an embedded scan, and what it found."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepscan.cli.context import AppContext, pass_app
from scanner.jobs import ScanOptions
from scanner.models import FrameResult, MediaItem

DEMO_FPS = 4.0  # the demo clips are a few seconds long: sample densely enough to see the segment
DEFAULT_TOP_FLAGGED = 10


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo data and checkpoint go [default: DEEPSCAN_HOME/demo].",
)
@click.option("--retrain", is_flag=True, help="Train the demo checkpoint again even if one exists.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_app
def demo(app: AppContext, out: Path | None, retrain: bool, output_format: str) -> None:
    """Run the whole product on synthetic data, no services or downloads needed.

    \b
    1. writes synthetic face images and clips (deepscan demo-data), once;
    2. trains a small resnet18 demo checkpoint on the CPU (about a minute), once;
    3. scans the held-out test images and the clips in embedded mode into the default database;
    4. prints the flagged items and, for each clip, the time range it flags.

    The demo model knows only the synthetic fakes: it says nothing about real deepfakes. To scan
    real media, train on real data (`deepscan train`) and `deepscan scan PATH --checkpoint FILE`.
    """
    from scanner.launch import launch_scan
    from scanner.producer import ScanBackend, ScanRequest
    from training.config import demo_config
    from training.synthetic import MANIFEST_NAME, write_demo_data
    from training.train import train
    from workers.embedded import EmbeddedRunner

    root = out or app.settings.home / "demo"
    data, checkpoint = root / "data", root / "demo.safetensors"
    say = click.echo if output_format == "table" else (lambda *_a, **_k: None)
    if not (data / MANIFEST_NAME).is_file():
        say(f"writing synthetic demo media to {data} …")
        write_demo_data(data)
    config = dataclasses.replace(demo_config(data, checkpoint), progress=app.show_progress(output_format))
    stale = _stale_reason(checkpoint, config.face_view)
    if retrain or not checkpoint.is_file() or stale:
        if stale and not retrain:
            say(f"the demo checkpoint at {checkpoint} {stale}: training it again")
        say("training the demo checkpoint (resnet18, 64 px, CPU) …")
        result = train(config)
        say(
            f"  trained in {result.seconds:.0f} s: validation ROC AUC {result.metrics.get('roc_auc', float('nan')):.3f}"
        )
    settings = dataclasses.replace(app.settings, broker_url=None, checkpoint=checkpoint)
    runner = EmbeddedRunner(settings, app.engine)
    options = ScanOptions(fps=DEMO_FPS)  # faces as the checkpoint's face view finds them, as in training
    say(f"face view: {runner.runtime.scorer.meta.face_view.describe()}")
    say(f"scanning {data / 'test'} and {data / 'videos'} (embedded mode, {settings.database_url}) …")
    request = ScanRequest([str(data / "test"), str(data / "videos")], options, name="demo")
    backend = ScanBackend(runner, runner.model_version)  # no webhook to tell
    scanned = launch_scan(settings, app.engine, request, backend, wait=True, progress=app.show_progress(output_format))
    manifest = json.loads((data / MANIFEST_NAME).read_text())
    report = demo_report(app, scanned.job_id, runner.runtime.scorer.threshold, manifest, data)
    report["elapsed_s"] = round(scanned.elapsed_s, 2)
    report["face_view"] = runner.runtime.scorer.meta.face_view.describe()
    report["checkpoint"] = str(checkpoint)
    report["data"] = str(data)
    if output_format == "json":
        click.echo(json.dumps(report))
    else:
        print_report(report)
        click.echo(next_steps(report, database_url=_database_url_from_command_line(app)))


def _stale_reason(checkpoint: Path, face_view: str) -> str | None:
    """Why an existing demo checkpoint no longer fits the demo recipe (None: it fits, or there is none)."""
    from scanner.checkpoint import read_checkpoint_meta
    from scanner.errors import CheckpointError
    from scanner.faces import FaceView

    if not checkpoint.is_file():
        return None
    try:
        trained_on = read_checkpoint_meta(checkpoint)[0].face_view
    except CheckpointError as exc:
        return f"cannot be read ({exc})"
    if trained_on != FaceView.named(face_view):
        return f"was trained on {trained_on.describe()}, an older demo recipe"
    return None


def demo_report(app: AppContext, job_id: int, threshold: float, manifest: dict[str, Any], data: Path) -> dict[str, Any]:
    """What the demo scan found, checked against the labels the synthetic data was made with."""
    from scanner.aggregation import DEFAULT_VIDEO_STRATEGY
    from scanner.timeline import flagged_ranges

    with Session(app.engine) as session:
        items = session.scalars(select(MediaItem).where(MediaItem.job_id == job_id)).all()
        frames = {
            item.id: [
                (f.timestamp_s, f.score)
                for f in session.scalars(select(FrameResult).where(FrameResult.item_id == item.id))
            ]
            for item in items
            if item.kind == "video"
        }
    images = [i for i in items if i.kind == "image" and i.status == "done"]
    truth = {i.id: "fake" if "/fake/" in i.url else "real" for i in images}
    clips = {entry["path"].rsplit("/", 1)[-1]: entry for entry in manifest["videos"]}
    return {
        "job_id": job_id,
        "threshold": threshold,
        "items": len(items),
        "errors": sum(i.status == "error" for i in items),
        "images": {
            "fakes_flagged": sum(i.verdict == "fake" and truth[i.id] == "fake" for i in images),
            "fakes": sum(t == "fake" for t in truth.values()),
            "reals_flagged": sum(i.verdict == "fake" and truth[i.id] == "real" for i in images),
            "reals": sum(t == "real" for t in truth.values()),
        },
        "top_flagged": [
            {"item_id": i.id, "score": round(i.score or 0.0, 4), "kind": i.kind, "url": i.url}
            for i in sorted((i for i in items if i.verdict == "fake"), key=lambda i: -(i.score or 0.0))[
                :DEFAULT_TOP_FLAGGED
            ]
        ],
        "videos": [
            {
                "item_id": i.id,
                "name": i.url.rsplit("/", 1)[-1],
                "score": i.score,
                "verdict": i.verdict,
                "strategy": i.strategy,
                "flagged_ranges_s": flagged_ranges(
                    frames[i.id], threshold, strategy=i.strategy or DEFAULT_VIDEO_STRATEGY
                ),
                "manipulated_s": _manipulated(clips.get(i.url.rsplit("/", 1)[-1])),
            }
            for i in sorted((i for i in items if i.kind == "video"), key=lambda i: i.url)
        ],
    }


def _manipulated(entry: dict[str, Any] | None) -> list[float] | None:
    if entry is None or entry["manipulated"] is None:
        return None
    return [entry["manipulated"]["start_s"], entry["manipulated"]["end_s"]]


def print_report(report: dict[str, Any]) -> None:
    images = report["images"]
    click.echo(
        f"\njob {report['job_id']}: {report['items']} items scanned in {report['elapsed_s']:.1f} s, "
        f"threshold {report['threshold']:.3f}"
    )
    click.echo(
        f"images: {images['fakes_flagged']}/{images['fakes']} synthetic fakes flagged, "
        f"{images['reals_flagged']}/{images['reals']} real images flagged"
    )
    click.echo(f"\ntop flagged:\n  {'score':>6}  {'kind':<5}  item")
    for row in report["top_flagged"]:
        click.echo(f"  {row['score']:>6.3f}  {row['kind']:<5}  [{row['item_id']}] {row['url']}")
    click.echo("\nvideos:")
    for video in report["videos"]:
        ranges = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in video["flagged_ranges_s"]) or "nothing"
        truth = "untouched" if video["manipulated_s"] is None else "{:.2f}-{:.2f} s".format(*video["manipulated_s"])
        click.echo(
            f"  {video['name']:<24} score {video['score']:.3f} {video['verdict']:<4} ({video['strategy']})  "
            f"flags {ranges}  (manipulated: {truth})"
        )


def _database_url_from_command_line(app: AppContext) -> str | None:
    """The database URL when `--database-url` gave it (the next commands must repeat it), else None."""
    if "database_url" in app.overrides:
        return str(app.overrides["database_url"])
    root = click.get_current_context().find_root()
    if root.get_parameter_source("database_url") == ParameterSource.COMMANDLINE:
        return app.settings.database_url
    return None


def next_steps(report: dict[str, Any], *, database_url: str | None) -> str:
    """The commands to paste next, each working as printed (paths quoted, the venv named when
    `deepscan` is not on PATH, the database repeated when it came from the command line)."""
    checkpoint, data = shlex.quote(report["checkpoint"]), shlex.quote(report["data"])
    db = f" --database-url {shlex.quote(database_url)}" if database_url else ""
    flagged = [v for v in report["videos"] if v["flagged_ranges_s"]] or report["videos"]
    if flagged:
        show = f"deepscan show {flagged[0]['item_id']}{db} --plot timeline.png"
    elif report["top_flagged"]:
        show = f"deepscan show {report['top_flagged'][0]['item_id']}{db}"
    else:
        show = ""
    lines = [f"\nNext, paste these (the demo checkpoint is {checkpoint}):"]
    if shutil.which("deepscan") is None:
        venv = shlex.quote(str(Path(sys.prefix)))
        lines.append(
            f"  . {venv}/bin/activate    # puts `deepscan` on PATH in this shell; for daily use: pipx install ."
        )
    lines.append(f"  deepscan results --job {report['job_id']} --verdict fake{db}")
    if show:
        lines.append(f"  {show}")
    lines.append(f"  deepscan scan {data}/videos --checkpoint {checkpoint}{db}")
    lines.append("This demo model knows only the synthetic fakes above. For real media, train a detector:")
    lines.append("docs/getting-a-real-detector.md")
    return "\n".join(lines)


COMMANDS: list[click.Command] = [demo]

"""Moderators' commands against real SQLite and PostgreSQL databases: results, show, review, export, stats, jobs."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from deepscan.cli import cli
from scanner.models import FrameResult, MediaItem, ModelRecord, Review, ScanJob

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def invoke(runner: CliRunner, url: str, *args: str) -> Result:
    return runner.invoke(cli, ["--database-url", url, *args], catch_exceptions=False)


def item(job: ScanJob, n: int, **fields: Any) -> MediaItem:
    """A finished image item (override any field); finished n minutes after T0, enqueued 2 s before."""
    score = fields.pop("score", 0.1)
    finished = fields.pop("finished_at", T0 + dt.timedelta(minutes=n))
    defaults: dict[str, Any] = {
        "url": f"file:///media/{n}.jpg",
        "kind": "image",
        "status": "done",
        "score": score,
        "verdict": None if score is None else "fake" if score >= 0.5 else "real",
        "model_version": "a" * 64,
        "strategy": "max",
        "enqueued_at": None if finished is None else finished - dt.timedelta(seconds=2),
        "finished_at": finished,
    }
    return MediaItem(job=job, **{**defaults, **fields})


def add_job(session: Session, name: str = "job", **fields: Any) -> ScanJob:
    job = ScanJob(name=name, source_spec=["/media"], **{"threshold": 0.5, "status": "done", **fields})
    session.add(job)
    return job


@pytest.fixture
def tied(engine: Engine) -> list[int]:
    """23 items of two jobs: scores with ties, identical finish times, and some with neither."""
    scores = [0.9, 0.9, 0.9, 0.7, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.9, 0.3, 0.5, 0.05, 0.0, 0.0]
    with Session(engine) as session, session.begin():
        jobs = [add_job(session, "a"), add_job(session, "b")]
        rows = [
            item(jobs[i % 2], i, score=s, finished_at=T0 + dt.timedelta(minutes=i // 3)) for i, s in enumerate(scores)
        ]
        rows += [item(jobs[0], 100 + i, score=None, status="queued", finished_at=None) for i in range(4)]
        rows += [item(jobs[1], 200 + i, score=None, status="error", error="http 404") for i in range(2)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def expected_order(engine: Engine, order: str) -> list[int]:
    """The documented total order, computed in Python: keyed first, key desc, id desc."""
    with Session(engine) as session:
        items = list(session.scalars(select(MediaItem)))
    column = "score" if order == "score" else "finished_at"
    keyed = [i for i in items if getattr(i, column) is not None]
    keyed.sort(key=lambda i: (getattr(i, column), i.id), reverse=True)
    unkeyed = sorted((i.id for i in items if getattr(i, column) is None), reverse=True)
    return [i.id for i in keyed] + unkeyed


def all_pages(runner: CliRunner, url: str, *args: str) -> tuple[list[dict[str, Any]], int]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        result = invoke(runner, url, "results", "--format", "json", *args, *(["--after", cursor] if cursor else []))
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        rows += payload["items"]
        pages += 1
        cursor = payload["next"]
        if cursor is None:
            return rows, pages


@pytest.mark.parametrize("order", ["score", "time"])
def test_pagination_returns_every_item_exactly_once_in_a_stable_order(
    runner: CliRunner, db_url: str, engine: Engine, tied: list[int], order: str
) -> None:
    rows, pages = all_pages(runner, db_url, "--order", order, "--limit", "4")
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(tied)
    assert ids == expected_order(engine, order)
    assert pages == 6  # 23 items, 4 a page


def test_pagination_with_a_filter_and_a_page_size_that_divides_exactly(
    runner: CliRunner, db_url: str, tied: list[int]
) -> None:
    rows, pages = all_pages(runner, db_url, "--verdict", "fake", "--limit", "5")
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert len({r["id"] for r in rows}) == len(rows) == 10
    assert pages == 2  # the second page is full and says it is the last
    assert all(r["verdict"] == "fake" for r in rows)


def test_pagination_with_a_relative_since_keeps_its_cursor_valid(
    runner: CliRunner, db_url: str, tied: list[int]
) -> None:
    rows, pages = all_pages(runner, db_url, "--since", "36500d", "--order", "time", "--limit", "5")
    assert sorted(r["id"] for r in rows) == sorted(tied[:17] + tied[21:])  # all but the 4 still queued
    assert pages == 4


def test_csv_output_parses_back_with_stable_fields_and_filters_apply(
    runner: CliRunner, db_url: str, engine: Engine
) -> None:
    with Session(engine) as session, session.begin():
        job, other = add_job(session), add_job(session, "other")
        video = item(job, 1, score=0.8, kind="video", url="file:///media/1.mp4")
        unreviewed = item(job, 2, score=0.95)
        reviewed = item(job, 3, score=0.6)
        session.add_all([video, unreviewed, reviewed, item(job, 4, score=0.2), item(other, 5, score=0.99)])
        session.flush()
        session.add(Review(item_id=reviewed.id, label="fake", reviewer="ann", created_at=T0))
        session.add(Review(item_id=reviewed.id, label="real", reviewer="bob", created_at=T0 + dt.timedelta(hours=1)))
        ids = {"video": video.id, "unreviewed": unreviewed.id, "reviewed": reviewed.id, "job": job.id}

    def csv_rows(*args: str) -> list[dict[str, str]]:
        result = invoke(runner, db_url, "results", "--format", "csv", "--job", str(ids["job"]), *args)
        assert result.exit_code == 0, result.output
        return list(csv.DictReader(io.StringIO(result.stdout)))

    rows = csv_rows("--verdict", "fake")
    assert list(rows[0]) == [
        "id", "job_id", "url", "kind", "status", "score", "verdict", "review_label", "reviewed_by",
        "reviewed_at", "model_version", "strategy", "error", "finished_at",
    ]  # fmt: skip
    assert [int(r["id"]) for r in rows] == [ids["unreviewed"], ids["video"], ids["reviewed"]]
    by_id = {int(r["id"]): r for r in rows}
    assert by_id[ids["reviewed"]]["review_label"] == "real"  # the newest review wins
    assert by_id[ids["reviewed"]]["reviewed_by"] == "bob"
    assert by_id[ids["unreviewed"]]["review_label"] == ""
    assert float(by_id[ids["unreviewed"]]["score"]) == 0.95
    assert dt.datetime.fromisoformat(by_id[ids["video"]]["finished_at"]) == T0 + dt.timedelta(minutes=1)

    assert [int(r["id"]) for r in csv_rows("--verdict", "fake", "--unreviewed")] == [ids["unreviewed"], ids["video"]]
    assert [int(r["id"]) for r in csv_rows("--reviewed")] == [ids["reviewed"]]
    assert [int(r["id"]) for r in csv_rows("--kind", "video")] == [ids["video"]]
    assert [int(r["id"]) for r in csv_rows("--min-score", "0.7", "--max-score", "0.9")] == [ids["video"]]
    since, until = (T0 + dt.timedelta(minutes=m) for m in (2, 3))
    window = csv_rows("--since", since.isoformat(), "--until", until.isoformat(), "--order", "time")
    assert [int(r["id"]) for r in window] == [ids["unreviewed"]]
    assert csv_rows("--status", "error") == []


def test_table_and_jsonl_print_the_next_cursor_on_stderr(runner: CliRunner, db_url: str, tied: list[int]) -> None:
    table = invoke(runner, db_url, "results", "--limit", "2")
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "job_id", "kind"]
    assert len(lines) == 3
    cursor = table.stderr.strip().removeprefix("next page: --after ")
    jsonl = invoke(runner, db_url, "results", "--limit", "2", "--format", "jsonl", "--after", cursor)
    assert jsonl.exit_code == 0
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(records) == 2
    assert {r["id"] for r in records}.isdisjoint(int(line.split()[0]) for line in lines[1:])
    assert jsonl.stderr.startswith("next page: --after ")


def test_bad_options_and_foreign_cursors_are_usage_errors(runner: CliRunner, db_url: str, tied: list[int]) -> None:
    first = json.loads(invoke(runner, db_url, "results", "--limit", "2", "--format", "json").stdout)
    foreign = runner.invoke(cli, ["--database-url", db_url, "results", "--order", "time", "--after", first["next"]])
    assert foreign.exit_code == 2
    assert "different query" in foreign.stderr
    garbage = runner.invoke(cli, ["--database-url", db_url, "results", "--after", "!!!"])
    assert garbage.exit_code == 2
    inverted = runner.invoke(cli, ["--database-url", db_url, "results", "--min-score", "0.9", "--max-score", "0.1"])
    assert inverted.exit_code == 2
    bad_date = runner.invoke(cli, ["--database-url", db_url, "results", "--since", "yesterday"])
    assert bad_date.exit_code == 2
    assert "not a date" in bad_date.stderr


@pytest.fixture
def video(engine: Engine) -> int:
    """A fake video: 20 frames 0.5 s apart, flagged from 2.0 s to 4.0 s and at 7.5 s; two faces at 3.0 s."""
    with Session(engine) as session, session.begin():
        job = add_job(session, threshold=0.6)
        session.add(ModelRecord(model_version="a" * 64, path="/ckpt.safetensors", arch="resnet50", threshold=0.5))
        clip = item(job, 1, kind="video", url="https://cdn.example/clip.mp4", score=0.81, strategy="topk_mean")
        clip.duration_s, clip.frames_scanned = 10.0, 20
        session.add(clip)
        session.flush()
        for i in range(20):
            score = 0.9 if 4 <= i <= 8 or i == 15 else 0.1
            session.add(FrameResult(item_id=clip.id, frame_index=i, timestamp_s=i * 0.5, face_index=0, score=score))
        session.add(FrameResult(item_id=clip.id, frame_index=6, timestamp_s=3.0, face_index=1, score=0.2))
        session.add(Review(item_id=clip.id, label="fake", reviewer="ann", note="lips drift", created_at=T0))
        return clip.id


def test_show_json_has_the_verdict_timeline_and_flagged_ranges(runner: CliRunner, db_url: str, video: int) -> None:
    result = invoke(runner, db_url, "show", str(video), "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["item"]["verdict"] == "fake"
    assert payload["item"]["threshold"] == 0.6  # the job's threshold overrides the model's
    assert payload["item"]["strategy"] == "topk_mean"
    assert payload["item"]["model_version"] == "a" * 64
    assert payload["item"]["reviews"][0]["note"] == "lips drift"
    assert len(payload["timeline"]) == 20
    assert payload["timeline"][6] == {"frame_index": 6, "timestamp_s": 3.0, "score": 0.9, "faces": 2}
    assert payload["flagged_ranges"] == [[2.0, 4.0], [7.5, 7.5]]


def test_show_by_url_prints_the_timeline_and_writes_the_plot(
    runner: CliRunner, db_url: str, video: int, tmp_path: Path
) -> None:
    out = tmp_path / "plots" / "clip.png"
    result = invoke(runner, db_url, "show", "https://cdn.example/clip.mp4", "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert "flagged time ranges (score >= 0.600): 2.00s-4.00s, 7.50s-7.50s" in result.stdout
    assert "human label:    fake by ann" in result.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(out) as png:
        png.verify()
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == (1200, 400)
        assert len(png.getcolors(maxcolors=1_000_000) or []) > 10  # a drawing, not a blank canvas


def test_show_unknown_item_fails_in_one_line_and_plotting_an_image_is_a_usage_error(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    missing = runner.invoke(cli, ["--database-url", db_url, "show", "999999"])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "Error: no item 999999: give an item id or a URL exactly as it was scanned"
    with Session(engine) as session, session.begin():
        image = item(add_job(session), 1)
        image.frames = [FrameResult(frame_index=0, timestamp_s=0.0, face_index=0, score=0.1)]  # as scans store it
        session.add(image)
        session.flush()
        image_id = image.id
    shown = runner.invoke(cli, ["--database-url", db_url, "show", str(image_id)])
    assert shown.exit_code == 0, shown.output
    assert "timeline" not in shown.stdout  # an image's one score is its score: no one-row timeline
    assert "flagged" not in shown.stdout
    plotted = runner.invoke(cli, ["--database-url", db_url, "show", str(image_id), "--plot", str(tmp_path / "x.png")])
    assert plotted.exit_code == 2
    assert "no per-frame timeline" in plotted.stderr
    assert not (tmp_path / "x.png").exists()


def test_review_records_a_label_that_results_show_beside_the_verdict(
    runner: CliRunner, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Session(engine) as session, session.begin():
        target = item(add_job(session), 1, score=0.97)
        session.add(target)
        session.flush()
        item_id = target.id
    monkeypatch.setenv("USER", "carol")
    result = invoke(runner, db_url, "review", str(item_id), "--label", "real", "--note", "stage makeup")
    assert result.exit_code == 0, result.output
    assert f"item {item_id} labelled real by carol (model: fake 0.970)" in result.stdout
    rows = json.loads(invoke(runner, db_url, "results", "--reviewed", "--format", "json").stdout)["items"]
    assert [(r["id"], r["verdict"], r["review_label"], r["reviewed_by"]) for r in rows] == [
        (item_id, "fake", "real", "carol")
    ]
    unknown = runner.invoke(cli, ["--database-url", db_url, "review", "424242", "--label", "fake"])
    assert unknown.exit_code == 1
    assert "no item 424242" in unknown.stderr
    assert runner.invoke(cli, ["--database-url", db_url, "review", str(item_id), "--label", "maybe"]).exit_code == 2


def test_review_takes_an_id_a_url_or_a_path_like_show(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"scanned")
    with Session(engine) as session, session.begin():
        job = add_job(session)
        local = item(job, 1, url=photo.as_uri(), score=0.8)
        remote = item(job, 2, url="https://cdn.example/a.jpg", score=0.2)
        errored = item(job, 3, url="https://cdn.example/gone.jpg", score=None, status="error", error="http 404")
        session.add_all([local, remote, errored])
        session.flush()
        ids = {"local": local.id, "remote": remote.id, "errored": errored.id}
    monkeypatch.chdir(tmp_path)
    by_path = invoke(runner, db_url, "review", "photo.jpg", "--label", "real", "--reviewer", "ann")
    assert by_path.exit_code == 0, by_path.output
    assert f"item {ids['local']} labelled real by ann" in by_path.stdout
    by_url = invoke(runner, db_url, "review", "https://cdn.example/a.jpg", "--label", "fake", "--reviewer", "ann")
    assert f"item {ids['remote']} labelled fake" in by_url.stdout
    refused = runner.invoke(cli, ["--database-url", db_url, "review", str(ids["errored"]), "--label", "fake"])
    assert refused.exit_code == 1
    assert f"item {ids['errored']} has no verdict to review: it ended error (http 404)" in refused.stderr
    rows = json.loads(invoke(runner, db_url, "results", "--reviewed", "--format", "json").stdout)["items"]
    assert sorted((r["id"], r["review_label"]) for r in rows) == [(ids["local"], "real"), (ids["remote"], "fake")]


def _scanned(path: Path) -> dict[str, Any]:
    """The URL and content sha256 a scan of this file records."""
    return {"url": path.as_uri(), "content_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _jpeg(path: Path, shade: int) -> dict[str, Any]:
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(path, format="JPEG")
    return _scanned(path)


def test_export_training_set_prefers_human_labels_and_reads_back_from_the_manifest(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with Session(engine) as session, session.begin():
        job = add_job(session)
        model_fake = item(job, 1, **_jpeg(media / "a.jpg", 10), score=0.9)
        overruled = item(job, 2, **_jpeg(media / "b.jpg", 20), score=0.8)
        unsure = item(job, 3, **_jpeg(media / "c.jpg", 30), score=0.7)
        model_real = item(job, 4, **_jpeg(media / "d.jpeg", 40), score=0.1)
        a_video = item(job, 5, url=(media / "e.mp4").as_uri(), kind="video", score=0.9)
        queued = item(job, 6, **_jpeg(media / "f.jpg", 50), score=None, status="queued", finished_at=None)
        Image.new("RGB", (6, 4), (200, 0, 0)).save(media / "g g.gif", format="GIF")
        a_gif = item(job, 7, **_scanned(media / "g g.gif"), score=0.99)  # %20 in the URL; GIF becomes PNG
        session.add_all([model_fake, overruled, unsure, model_real, a_video, queued, a_gif])
        session.flush()
        session.add(Review(item_id=overruled.id, label="real", reviewer="ann"))
        session.add(Review(item_id=unsure.id, label="unsure", reviewer="ann"))
        ids = {"fake": model_fake.id, "overruled": overruled.id, "real": model_real.id, "gif": a_gif.id}

    out = tmp_path / "train"
    result = invoke(runner, db_url, "export-training-set", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 2 fake images and 2 real images" in result.stdout
    assert "left out: 1 unsure item, 1 item that is not an image" in result.stdout
    assert sorted(p.name for p in (out / "fake").iterdir()) == sorted([f"{ids['fake']}.jpg", f"{ids['gif']}.png"])
    with Image.open(out / "fake" / f"{ids['gif']}.png") as png:
        assert (png.format, png.size) == ("PNG", (6, 4))
    assert sorted(p.name for p in (out / "real").iterdir()) == sorted(f"{ids[k]}.jpg" for k in ("overruled", "real"))
    with Image.open(out / "real" / f"{ids['overruled']}.jpg") as img:
        assert img.size == (8, 8)
    with (out / "manifest.csv").open(newline="") as fh:
        manifest = {int(row["item_id"]): row for row in csv.DictReader(fh)}
    assert set(manifest) == {ids["fake"], ids["overruled"], ids["real"], ids["gif"]}
    assert manifest[ids["overruled"]]["label_source"] == "review"
    assert manifest[ids["overruled"]]["verdict"] == "fake"
    assert manifest[ids["fake"]]["label_source"] == "model"

    reviewed_only = invoke(runner, db_url, "export-training-set", str(tmp_path / "reviewed"), "--reviewed-only")
    assert "wrote 0 fake images and 1 real image" in reviewed_only.stdout
    assert [p.name for p in (tmp_path / "reviewed" / "real").iterdir()] == [f"{ids['overruled']}.jpg"]

    # A relabel moves the file on the next export; a vanished file is reported, exit 3.
    with Session(engine) as session, session.begin():
        session.add(Review(item_id=ids["real"], label="fake", reviewer="bob"))
    (media / "a.jpg").unlink()
    again = runner.invoke(cli, ["--database-url", db_url, "export-training-set", str(out)])
    assert again.exit_code == 3
    assert f"item {ids['fake']}: " in again.stderr
    assert (out / "fake" / f"{ids['real']}.jpg").is_file()
    assert not (out / "real" / f"{ids['real']}.jpg").exists()


def test_export_skips_images_changed_since_they_were_scanned_and_counts_why(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with Session(engine) as session, session.begin():
        job = add_job(session)
        kept = item(job, 1, **_jpeg(media / "kept.jpg", 10), score=0.9)
        swapped = item(job, 2, **_jpeg(media / "swapped.jpg", 20), score=0.9)  # reviewed, then replaced
        edited = item(job, 3, **_jpeg(media / "edited.jpg", 30), score=0.1)
        unhashed = item(job, 4, url=_jpeg(media / "old.jpg", 40)["url"], score=0.1)  # scanned before hashes
        session.add_all([kept, swapped, edited, unhashed])
        session.flush()
        session.add(Review(item_id=swapped.id, label="fake", reviewer="ann"))
        ids = {"kept": kept.id, "swapped": swapped.id, "edited": edited.id, "unhashed": unhashed.id}
    out = tmp_path / "train"
    first = invoke(runner, db_url, "export-training-set", str(out))
    assert first.exit_code == 0, first.output
    assert (out / "fake" / f"{ids['swapped']}.jpg").is_file()
    assert "wrote 2 fake images and 1 real image" in first.stdout
    assert "left out 1 image that is not the content scanned: 1 no content hash recorded" in first.stdout

    _jpeg(media / "swapped.jpg", 200)  # another picture at the same URL, after the review
    with (media / "edited.jpg").open("ab") as fh:
        fh.write(b"\0")  # one byte more: still decodes, no longer the content scanned
    again = invoke(runner, db_url, "export-training-set", str(out))

    assert again.exit_code == 0, again.output
    assert "wrote 1 fake image and 0 real images" in again.stdout
    assert (
        "left out 3 images that are not the content scanned: "
        "2 content changed since it was scanned; 1 no content hash recorded (scan it again)"
    ) in again.stdout
    assert f"item {ids['swapped']}: left out: content changed since it was scanned" in again.stderr
    assert [p.name for p in (out / "fake").iterdir()] == [f"{ids['kept']}.jpg"]  # the earlier copy is gone too
    assert list((out / "real").iterdir()) == []
    with (out / "manifest.csv").open(newline="") as fh:
        assert [int(row["item_id"]) for row in csv.DictReader(fh)] == [ids["kept"]]


def test_stats_by_day_job_and_model_parse_back(runner: CliRunner, db_url: str, engine: Engine) -> None:
    day2 = T0 + dt.timedelta(days=1)
    with Session(engine) as session, session.begin():
        job, other = add_job(session), add_job(session, "other")
        session.add_all([item(job, i, score=s) for i, s in enumerate([0.9, 0.8, 0.1, 0.2])])
        session.add(item(job, 10, score=None, status="error", error="http 404"))
        session.add(item(job, 11, score=None, status="error", error="http 404"))
        session.add(item(other, 12, score=0.7, finished_at=day2, model_version="b" * 64))
        session.add(
            item(
                other,
                13,
                score=None,
                status="error",
                error="not an image or video",
                finished_at=day2,
                model_version="b" * 64,
            )
        )
        session.flush()
        job_id = job.id

    by_day = json.loads(invoke(runner, db_url, "stats", "--format", "json").stdout)["items"]
    assert [r["key"] for r in by_day] == ["2026-03-01", "2026-03-02"]
    first = by_day[0]
    assert (first["items"], first["done"], first["errors"], first["fakes"]) == (6, 4, 2, 2)
    assert first["fake_rate"] == 0.5
    assert first["error_rate"] == pytest.approx(2 / 6)
    assert first["errors_by_reason"] == {"http 404": 2}
    assert first["mean_latency_s"] == pytest.approx(2.0, abs=1e-3)

    by_job = json.loads(invoke(runner, db_url, "stats", "--by", "job", "--job", str(job_id), "--format", "json").stdout)
    assert [r["key"] for r in by_job["items"]] == [str(job_id)]

    result = invoke(runner, db_url, "stats", "--by", "model", "--format", "csv")
    by_model = {row["key"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(by_model) == {"a" * 64, "b" * 64}
    assert json.loads(by_model["b" * 64]["errors_by_reason"]) == {"not an image or video": 1}
    assert float(by_model["b" * 64]["fake_rate"]) == 1.0

    table = invoke(runner, db_url, "stats")
    assert "http 404 (2)" in table.stdout


def test_export_removes_the_copy_of_an_item_whose_source_vanished(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    with Session(engine) as session, session.begin():
        job = add_job(session)
        kept = item(job, 1, **_jpeg(media / "kept.jpg", 10), score=0.9)
        gone = item(job, 2, **_jpeg(media / "gone.jpg", 20), score=0.9)
        session.add_all([kept, gone])
        session.flush()
        kept_id, gone_id = kept.id, gone.id
    out = tmp_path / "train"
    assert invoke(runner, db_url, "export-training-set", str(out)).exit_code == 0
    assert sorted(p.name for p in (out / "fake").iterdir()) == [f"{kept_id}.jpg", f"{gone_id}.jpg"]

    (media / "gone.jpg").unlink()
    again = invoke(runner, db_url, "export-training-set", str(out))
    assert again.exit_code == 3
    assert "1 image could not be fetched: not exported" in again.stderr
    assert [p.name for p in (out / "fake").iterdir()] == [f"{kept_id}.jpg"]  # training reads the folder


def test_jobs_show_prints_the_threshold_applied(runner: CliRunner, db_url: str, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add(ModelRecord(model_version="c" * 64, path="/ckpt.safetensors", arch="resnet50", threshold=0.73))
        calibrated = add_job(session, "calibrated", threshold=None, model_version="c" * 64)
        given = add_job(session, "given", threshold=0.4, model_version="c" * 64)
        session.flush()
        ids = calibrated.id, given.id
    shown = [invoke(runner, db_url, "jobs", "show", str(job_id)).stdout for job_id in ids]
    assert "threshold:     0.730 (the checkpoint's)" in shown[0]
    assert "threshold:     0.400 (given with the scan)" in shown[1]
    record = json.loads(invoke(runner, db_url, "jobs", "show", str(ids[0]), "--format", "json").stdout)
    assert (record["threshold"], record["threshold_source"]) == (0.73, "checkpoint")


def test_tokens_list_takes_every_list_format(runner: CliRunner, db_url: str) -> None:
    for name, role in (("ann", "reviewer"), ("bob", "viewer")):
        assert invoke(runner, db_url, "tokens", "create", name, "--role", role).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(invoke(runner, db_url, "tokens", "list", "--format", "csv").stdout)))
    assert [(r["name"], r["role"], r["revoked_at"]) for r in rows] == [("ann", "reviewer", ""), ("bob", "viewer", "")]
    assert rows[0]["created_at"].endswith("Z")
    lines = invoke(runner, db_url, "tokens", "list", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["ann", "bob"]
    listed = json.loads(invoke(runner, db_url, "tokens", "list", "--format", "json").stdout)
    assert (len(listed["items"]), listed["next"]) == (2, None)


def test_jobs_list_and_show_report_counts_duration_and_speed(runner: CliRunner, db_url: str, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        job = add_job(session, "bucket", started_at=T0, finished_at=T0 + dt.timedelta(seconds=40))
        statuses = ["done"] * 5 + ["error"] * 3 + ["queued", "processing", "cancelled"]
        session.add_all(
            item(job, i, status=s, score=0.9 if i < 2 else 0.1 if s == "done" else None) for i, s in enumerate(statuses)
        )
        running = add_job(session, "newer", status="running", started_at=T0)
        session.flush()
        job_id, running_id = job.id, running.id

    shown = json.loads(invoke(runner, db_url, "jobs", "show", str(job_id), "--format", "json").stdout)
    counts = {k: shown[k] for k in ("queued", "processing", "done", "error", "cancelled", "flagged", "total")}
    assert counts == {"queued": 1, "processing": 1, "done": 5, "error": 3, "cancelled": 1, "flagged": 2, "total": 11}
    assert shown["duration_s"] == 40.0
    assert shown["items_per_s"] == pytest.approx(8 / 40)

    table = invoke(runner, db_url, "jobs", "show", str(job_id)).stdout
    assert "duration:      40s" in table
    assert "items/s:       0.200" in table

    listed = json.loads(invoke(runner, db_url, "jobs", "list", "--format", "json").stdout)["items"]
    assert [j["id"] for j in listed] == [running_id, job_id]
    assert listed[0]["total"] == 0
    assert listed[0]["duration_s"] > 0  # still running: measured up to now
    assert runner.invoke(cli, ["--database-url", db_url, "jobs", "show", "987654"]).exit_code == 1


def test_results_filter_by_model_version_or_its_prefix(runner: CliRunner, db_url: str, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        job = add_job(session)
        old, new = item(job, 1, score=0.9), item(job, 2, score=0.8, model_version="b" * 64)
        session.add_all([old, new])
        session.flush()
        ids = {"old": old.id, "new": new.id}

    def listed(*args: str) -> list[int]:
        result = invoke(runner, db_url, "results", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.stdout)["items"]]

    assert listed("--model", "b" * 12) == [ids["new"]]
    assert listed("--model", "a" * 64) == [ids["old"]]
    assert listed("--model", "%") == []  # a LIKE wildcard is a plain character here


def test_a_label_follows_the_content_and_the_export_writes_each_content_once(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    photo = _jpeg(media / "a.jpg", 10)
    (media / "copy.jpg").write_bytes((media / "a.jpg").read_bytes())
    with Session(engine) as session, session.begin():
        first, second = add_job(session, "first"), add_job(session, "again")
        items = [item(first, 1, **photo, score=0.9), item(second, 2, **photo, score=0.9)]
        items.append(item(second, 3, **_scanned(media / "copy.jpg"), score=0.9))
        other = item(second, 4, **_jpeg(media / "b.jpg", 200), score=0.9)
        session.add_all([*items, other])
        session.flush()
        ids, other_id = [i.id for i in items], other.id
    assert invoke(runner, db_url, "review", str(ids[0]), "--label", "real", "--reviewer", "ann").exit_code == 0

    rows = json.loads(invoke(runner, db_url, "results", "--format", "json").stdout)["items"]
    labelled = {r["id"]: (r["review_label"], r["reviewed_by"]) for r in rows}
    assert [labelled[i] for i in ids] == [("real", "ann")] * 3  # the copy and the rescan too
    unreviewed = json.loads(invoke(runner, db_url, "results", "--unreviewed", "--format", "json").stdout)["items"]
    assert [r["id"] for r in unreviewed] == [other_id]

    out = tmp_path / "train"
    result = invoke(runner, db_url, "export-training-set", str(out), "--reviewed-only")
    assert "wrote 0 fake images and 1 real image" in result.stdout  # one content, written once
    assert [p.name for p in (out / "real").iterdir()] == [f"{ids[0]}.jpg"]

"""The OpenAPI document as clients need it: errors declared as `application/problem+json`, and every
field of the core's dataclasses described (they are the responses field for field, so their words
live here rather than in the core)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_MEDIA_TYPE = "application/problem+json"

_ITEM = {
    "id": "The item's id.",
    "job_id": "The job that scanned it.",
    "url": "Its source, as scanned (file://, http(s)://, s3://; credentials and query strings removed).",
    "kind": "image, video, or unknown (not fetched or not media).",
    "status": "queued, processing, done, error or cancelled.",
    "score": "Probability that it is manipulated, in [0, 1]; null without a verdict.",
    "verdict": "fake when score >= threshold, else real; null unless done.",
    "model_version": "sha256 of the checkpoint that scored it.",
    "strategy": "How frame or face scores became the item's score.",
    "error": "Why it ended error, in one line; null otherwise.",
    "finished_at": "When it ended (UTC).",
}
FIELD_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "ResultRow": {
        **_ITEM,
        "review_label": "The newest human label (fake, real, unsure); null if unreviewed.",
        "reviewed_by": "Who gave that label.",
        "reviewed_at": "When (UTC).",
    },
    "ItemDetail": {
        **_ITEM,
        "threshold": "The threshold applied: the job's, else the checkpoint's calibrated one.",
        "width": "Image or video width in pixels.",
        "height": "Image or video height in pixels.",
        "duration_s": "Video length in seconds.",
        "frames_scanned": "Video frames scored.",
        "content_sha256": "sha256 of the bytes scanned.",
        "attempts": "Deliveries to a worker so far.",
        "enqueued_at": "When it was queued (UTC).",
        "started_at": "When a worker took it (UTC).",
        "reviews": (
            "Human labels, oldest first; the label in force is the newest not undone, of this item or of any "
            "item with the same content."
        ),
    },
    "ReviewView": {
        "id": "The review's id.",
        "item_id": "The item labelled.",
        "label": "fake, real or unsure.",
        "reviewer": "Who labelled it (the API token's name).",
        "note": "Why, in the reviewer's words.",
        "created_at": "When (UTC).",
        "undone_at": "When the label was undone (UTC); null while it stands. Undone labels stay in the history.",
        "undone_by": "Who undid it.",
    },
    "FramePoint": {
        "frame_index": "The frame's index among those sampled (0 for an image).",
        "timestamp_s": "Its time in the video, in seconds.",
        "score": "The highest face score in the frame.",
        "faces": "Faces scored in the frame (1 when the whole frame was scored).",
    },
    "JobSummary": {
        "id": "The job's id.",
        "name": "Its name.",
        "status": "pending, running, done, failed or cancelled.",
        "created_at": "When it was submitted (UTC).",
        "started_at": "When its first item was taken (UTC).",
        "finished_at": "When its last item ended (UTC).",
        "threshold": "The threshold applied: the job's own, else its checkpoint's calibrated one.",
        "threshold_source": "job (given when scanning) or checkpoint (calibrated); null when none is known yet.",
        "model_version": "sha256 of the checkpoint that scores it.",
        "queued": "Items waiting for a worker.",
        "processing": "Items a worker holds.",
        "done": "Items with a verdict.",
        "error": "Items that ended error.",
        "cancelled": "Items that will not be scanned.",
        "flagged": "Items with verdict fake.",
        "total": "All its items.",
        "duration_s": "From start to end (to now while it runs), in seconds.",
        "items_per_s": "Finished items per second of duration.",
    },
    "StatsRow": {
        "key": "The group: a UTC day (YYYY-MM-DD), a job id or a model version.",
        "items": "Items in the group.",
        "done": "Items with a verdict.",
        "errors": "Items that ended error.",
        "fakes": "Items with verdict fake.",
        "fake_rate": "fakes / items with a verdict; null without any.",
        "error_rate": "errors / finished items; null without any.",
        "mean_latency_s": "Mean seconds from queueing to verdict.",
        "errors_by_reason": "Errors counted by their one-line reason, most frequent first.",
    },
}


def describe_fields(spec: dict[str, Any]) -> None:
    """Give each property of the core's schemas its description (and a title-only one none)."""
    schemas = spec.get("components", {}).get("schemas", {})
    for name, fields in FIELD_DESCRIPTIONS.items():
        for field, text in fields.items():
            prop = schemas.get(name, {}).get("properties", {}).get(field)
            if prop is not None:
                prop.setdefault("description", text)


def declare_problems(spec: dict[str, Any]) -> None:
    """Error responses are served as `application/problem+json` (RFC 9457): say so."""
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")


def install(app: FastAPI) -> None:
    """Build the document once, on first request, with the two changes above."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            describe_fields(spec)
            declare_problems(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the document

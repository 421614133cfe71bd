"""A worker's Prometheus metrics, scraped over HTTP from the server `deepscan worker --metrics-port` starts."""

from __future__ import annotations

import socket

import requests

from workers import metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Report:
    done = 5
    reused = 2
    skipped = 1
    lost = 0
    errors = {11: "http 404", 12: "exceeds 50 MB limit", 13: "fetch failed: ConnectionError: refused at 10.0.0.1"}


def test_reasons_become_bounded_labels() -> None:
    assert metrics.reason_label("http 404") == "http 404"
    assert metrics.reason_label("exceeds 50 MB limit") == "exceeds 50 MB limit"
    assert metrics.reason_label("fetch failed: ConnectionError: refused at 10.0.0.1") == "fetch failed"
    assert len(metrics.reason_label("x" * 500)) == metrics.MAX_REASON_CHARS


def test_worker_metrics_are_served_in_prometheus_text_format() -> None:
    port = _free_port()
    metrics.start_metrics_server(port, host="127.0.0.1")
    metrics.record_items(
        done=Report.done, reused=Report.reused, skipped=Report.skipped, lost=Report.lost, errors=Report.errors.values()
    )
    metrics.record_batch(24, 0.03)
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert 'deepscan_worker_items_total{outcome="reused"}' in text
    assert 'deepscan_worker_items_total{outcome="error"}' in text
    assert 'deepscan_worker_item_errors_total{reason="exceeds 50 MB limit"}' in text
    assert 'deepscan_worker_item_errors_total{reason="fetch failed"}' in text
    assert "deepscan_worker_batch_size_bucket" in text
    assert "deepscan_worker_inference_seconds_count" in text
    assert "deepscan_worker_enqueue_to_verdict_seconds" in text

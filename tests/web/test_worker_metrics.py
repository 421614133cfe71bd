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


def test_labels_name_no_host_address_or_measured_number() -> None:
    """Every host scanned would otherwise become a time series, readable by anyone who scrapes."""
    same = {
        "connection to HOST failed": ["connection to cdn.one.example failed", "connection to 203.0.113.9 failed"],
        "DNS lookup of HOST failed": ["DNS lookup of a.example failed", "DNS lookup of b.example failed"],
        "unknown host HOST": ["unknown host intranet", "unknown host other.example"],
        "TLS error with HOST (certificate not trusted?)": ["TLS error with x.example (certificate not trusted?)"],
        "video deadline of N s exceeded": ["video deadline of 34.2969 s exceeded", "video deadline of 7 s exceeded"],
        "image is NxN, over the N-pixel limit": ["image is 9000x9000, over the 178,956,970-pixel limit"],
    }
    for label, reasons in same.items():
        assert {metrics.reason_label(r) for r in reasons} == {label}
    private = metrics.reason_label("refused: host resolves to private address fd00::1 (set DEEPSCAN_…)")
    assert "fd00" not in private
    assert metrics.reason_label("s3 503") == "s3 503"


def test_the_metrics_port_listens_on_loopback_only() -> None:
    port = _free_port()
    metrics.start_metrics_server(port)
    with socket.socket() as other:  # 127.0.0.2 is this host too: free only when nothing bound 0.0.0.0
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.2", port))
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).status_code == 200


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

"""The library's own series in multiprocess mode: the same events, spread over two worker
processes sharing a directory, show the same samples in a scrape as in a single process
(folds, overflows, failures by stage, scrapes by result, renderings counted). In a fresh
Python each, for a fresh prometheus_client import. Under a real gunicorn:
tests/e2e/test_multiprocess_self_metrics.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_python

EVENTS = """
    import os, sys
    from prometheus_client.parser import text_string_to_metric_families
    from asgi_metrics.core.settings import Settings
    from asgi_metrics.wiring import build

    parts = build(Settings(const_labels={"app": "x"}))

    def events(share):
        for _ in range(share):
            parts.self_metrics.count_fold("tenant")
            parts.recorder.failures.report("recording a request", RuntimeError("injected"))
        parts.self_metrics.count_overflow("http_requests")
        parts.exposition.respond("GET", None, None)

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        pid = os.fork()
        if pid == 0:  # another worker: its share, then it dies
            events(2)
            os._exit(0)
        os.waitpid(pid, 0)
        events(3)
    else:
        events(2)
        events(3)
    text = parts.exposition.respond("GET", None, None)[2].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # Rendering times differ between the modes; their count must not.
            if sample.name.startswith("http_metrics_") and not sample.name.endswith(
                    ("render_seconds_sum", "render_seconds_bucket")):
                print(sample.name, sorted(sample.labels.items()), sample.value)
"""


def scrape(env: dict[str, str]) -> list[str]:
    result = run_python(EVENTS, env)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.splitlines())


def test_two_workers_show_what_one_process_shows(tmp_path: Path) -> None:
    single = scrape({})
    multi = scrape({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert multi == single
    # And the numbers are the events' (not two empty scrapes alike).
    assert ("http_metrics_label_values_folded_total [('app', 'x'), ('label', 'tenant')] 5.0"
            in multi)
    assert ("http_metrics_recording_failures_total [('app', 'x'), ('stage', 'recording a"
            " request')] 5.0" in multi)
    assert ("http_metrics_label_sets_overflowed_total [('app', 'x'), ('family',"
            " 'http_requests')] 2.0" in multi)
    # Three scrapes (two before, this one counted as it is admitted), two renderings done.
    assert "http_metrics_scrapes_total [('app', 'x'), ('result', 'answered')] 3.0" in multi
    assert "http_metrics_scrapes_total [('app', 'x'), ('result', 'rejected')] 0.0" in multi
    assert "http_metrics_scrape_render_seconds_count [('app', 'x')] 2.0" in multi

"""Native histograms end to end: a real uvicorn (one process) and a real gunicorn (two
uvicorn workers, multiprocess mode) serving the middleware with ``native_histograms`` on,
scraped by a real Prometheus 2.42 with ``--enable-feature=native-histograms``; requests
sleep for durations drawn from a known distribution. The p99 of the native series lands
within the native buckets' error of the known p99, its count equals
``http_requests_total``, and the classic ``_bucket`` series are not stored.

Bounded: 200 requests of at most 150 ms, 8 at a time; every wait has a deadline.
"""

from __future__ import annotations

import dataclasses
import math
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from asgi_metrics.core.settings import Settings
from tests.support.prometheus_server import PrometheusServer
from tests.support.servers import Server, gunicorn, http_get, uvicorn, uvicorn_worker

pytestmark = pytest.mark.skipif(
    "native_histograms" not in {f.name for f in dataclasses.fields(Settings)},
    reason="needs the recording side of native histograms (the native_histograms setting)",
)

APP = "tests.support.apps.multiprocess_asgi:app"
REQUESTS = 200
#: Relative error allowed on a quantile: half a native bucket at the default factor 1.1
#: (schema 3, buckets 2**(1/8) = 1.09 wide) is 4.4%; the rest is the server's own time
#: on top of each sleep, on a shared machine.
QUANTILE_ERROR = 0.12


def sleeps() -> list[int]:
    """Log-uniform between 5 and 150 ms, in whole milliseconds (the route takes ms)."""
    rng = random.Random(1515)
    return [round(math.exp(rng.uniform(math.log(5), math.log(150)))) for _ in range(REQUESTS)]


def known_quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1000


@pytest.mark.parametrize("mode", ["uvicorn", "gunicorn-2-workers"])
def test_prometheus_queries_the_native_histogram(tmp_path: Path, mode: str) -> None:
    env = {"HTTP_METRICS_NATIVE_HISTOGRAMS": "true"}
    if mode == "uvicorn":
        server = Server(uvicorn(APP), env=env)
    else:
        directory = tmp_path / "multiproc"
        directory.mkdir()
        server = Server(gunicorn(APP, "-w", "2", "-k", uvicorn_worker()), env=env,
                        multiproc_dir=str(directory))
    drawn = sleeps()
    with server, PrometheusServer(
        [f"127.0.0.1:{server.port}"], scrape_interval="1s",
        extra_flags=["--enable-feature=native-histograms"],
    ) as prometheus:
        # One request first, so the series exists before the measured traffic: rate()
        # then sees every measured request as an increase.
        assert http_get(f"{server.url}/sleep/{drawn[0]}")[0] == 200
        prometheus.wait_for_scrapes(3, timeout=30)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(
                lambda ms: http_get(f"{server.url}/sleep/{ms}")[0], drawn[1:]
            ))
        assert statuses == [200] * (REQUESTS - 1)
        route = '{route="/sleep/{ms}"}'

        def counted() -> float | None:
            native = prometheus.query(f"sum(histogram_count(http_request_duration_seconds{route}))")
            total = prometheus.query(f"sum(http_requests_total{route})")
            if not native or not total:
                return None
            count, requests = float(native[0]["value"][1]), float(total[0]["value"][1])
            return count if count == requests == REQUESTS else None

        prometheus.wait_for(counted, timeout=20, message="every request in the native count")
        assert prometheus.query("http_request_duration_seconds_bucket") == []
        for q in (0.5, 0.9, 0.99):
            result = prometheus.query(
                f"histogram_quantile({q}, sum(rate(http_request_duration_seconds{route}[1m])))"
            )
            measured = float(result[0]["value"][1])
            known = known_quantile(drawn[1:], q)
            error = (measured - known) / known
            print(f"{mode}: p{q * 100:g} native {measured * 1000:.2f} ms, known"
                  f" {known * 1000:.0f} ms, error {error:+.1%}")
            assert abs(error) <= QUANTILE_ERROR, (q, measured, known)

"""Our Falcon (WSGI) overhead against falcon-prometheus, in-process.

Same method as ``flask_peer_quick.py`` (whose driver it uses): each variant called as a
WSGI server calls it, ``time.thread_time()``, interleaved rounds in a rotating order,
medians over rounds, overhead against the bare app. falcon-prometheus (0.1.0, 2018) labels
by the raw path, not the route template, and only works for ``falcon.App`` (its middleware
is synchronous). Needs the peer: it is not in ``requirements.txt``, so run it in a venv of
its own::

    pip install falcon falcon-prometheus prometheus_client
    python benchmarks/falcon_peer_quick.py [requests per round] [rounds]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from benchmarks.flask_peer_quick import App, run


class User:
    def on_get(self, req: Any, resp: Any, user_id: int) -> None:
        resp.text = "ok"


def falcon_variants() -> dict[str, App]:
    import falcon

    from wsgi_metrics import MetricsMiddleware

    def build(middleware: list[Any] | None = None) -> Any:
        app = falcon.App(middleware=middleware or [])
        app.add_route("/users/{user_id:int}", User())
        return app

    variants: dict[str, App] = {
        "bare": build(),
        "ours": MetricsMiddleware(build(), registry=CollectorRegistry()),
    }
    try:
        from falcon_prometheus import PrometheusMiddleware
    except ImportError:
        print("falcon-prometheus not installed: skipped")
    else:
        variants["peer"] = build([PrometheusMiddleware()])
    return variants


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 21
    run("falcon", falcon_variants(), "/users/7", n, rounds)


if __name__ == "__main__":
    main()

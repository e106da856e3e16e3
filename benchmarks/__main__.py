"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR]``"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _env, e2e, inprocess_asgi, inprocess_wsgi, report, scaling_asgi, scrape

RESULTS = Path(__file__).resolve().parent / "results"

# (n per batch, interleaved rounds, warm-up requests) per in-process section; for e2e
# (wrk seconds per run, interleaved rounds, wrk warm-up seconds per server).
FULL = {"asgi": (2000, 31, 500), "scaling": (100, 25, 50), "flask": (2000, 25, 500),
        "django": (2000, 15, 500), "scrape": 5, "e2e": (5, 5, 1)}
QUICK = {"asgi": (100, 3, 20), "scaling": (20, 3, 5), "flask": (100, 3, 20),
         "django": (100, 3, 20), "scrape": 1, "e2e": (1, 1, 0)}
SECTIONS = ("asgi", "scaling", "flask", "django", "scrape", "e2e")


def _fastest_asgi_peer(results: dict[str, Any]) -> str | None:
    variants = results.get("asgi", {}).get("variants", {})
    peers = {n: v["overhead_us"] for n, v in variants.items()
             if v["kind"] == "peer" and v["overhead_us"] is not None}
    return min(peers, key=peers.__getitem__) if peers else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: proves it runs")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="NAME",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default benchmarks/results, or"
                             " benchmarks/results/quick with --quick)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    chosen = args.only or list(SECTIONS)
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)

    results: dict[str, Any] = {"meta": {**_env.machine_info(), "quick": args.quick,
                                        "sections": chosen}}
    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("asgi", "asgi", lambda: inprocess_asgi.run_main(*cfg["asgi"])),
        ("scaling", "asgi_scaling", lambda: scaling_asgi.run(*cfg["scaling"])),
        ("flask", "wsgi_flask", lambda: inprocess_wsgi.run_flask(*cfg["flask"])),
        ("django", "wsgi_django", lambda: inprocess_wsgi.run_django(*cfg["django"])),
        ("scrape", "scrape", lambda: scrape.run(cfg["scrape"])),
        ("e2e", "e2e", lambda: e2e.run(*cfg["e2e"], _fastest_asgi_peer(results))),
    ]
    for name, key, step in steps:
        if name not in chosen:
            continue
        start = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        results[key] = step()
        results[key]["elapsed_s"] = round(time.perf_counter() - start, 2)
        print(f"[benchmarks] {name} done in {results[key]['elapsed_s']} s",
              file=sys.stderr, flush=True)
    for path in report.write(results, out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

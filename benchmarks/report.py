"""Turn the results dict into results.json, results.md and overhead.png."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]


def _variant_table(section: Row) -> list[str]:
    rows = []
    for name, v in section["variants"].items():
        note = v["status"] if v["status"] == "ok" else f"{v['status']}: {v['reason']}"
        rows.append([
            f"**{name}**" if name == "ours" else name,
            _f(v["median_us"]),
            _f(v["overhead_us"]),
            _f(v.get("paired_overhead_us")),
            _f(v["ours_over_this"], 3),
            note.replace("|", "/"),
        ])
    header = ["variant", "median µs/request", "overhead µs", "paired overhead µs",
              "ours/this overhead", "status"]
    return _table(header, rows)


def _target(
    label: str, value: float | None, goal: str, ok: Callable[[float], bool], unresolved: str = ""
) -> list[str]:
    if value is None:
        return [label, "-", goal, "n/a (not measured)"]
    if unresolved:
        return [label, _f(value, 3), goal, f"unresolved: {unresolved}"]
    return [label, _f(value, 3), goal, "met" if ok(value) else "MISSED"]


def _scaling_noise(section: Row) -> str:
    """Why the full-app flatness ratio says nothing, if the baseline's wobble at the largest
    size (median absolute deviation) is larger than the overhead measured there."""
    if not section.get("sizes"):
        return ""
    last = section["sizes"][str(section["params"]["extra_routes"][-1])]["variants"]
    mad = last.get("bare", {}).get("mad_us")
    over = last.get("ours", {}).get("overhead_us")
    if mad is None or over is None or mad <= abs(over):
        return ""
    return f"bare wobbles ±{mad:.0f} µs at that size, more than the overhead ({over:.1f} µs)"


def _targets(r: Row) -> list[str]:
    asgi = r.get("asgi", {})
    ours_asgi = asgi.get("variants", {}).get("ours", {}).get("overhead_us")
    pfi = asgi.get("variants", {}).get("prometheus-fastapi-instrumentator", {})
    floor = asgi.get("floor", {}).get("floor_us")
    scaling = r.get("asgi_scaling", {})
    flat = scaling.get("overhead_ratio_last_to_first", {}).get("ours")
    flat_stub = scaling.get("router_stub", {}).get("overhead_ratio_last_to_first", {}).get("ours")
    flask_ratio = (r.get("wsgi_flask", {}).get("variants", {})
                   .get("prometheus-flask-exporter", {}).get("ours_over_this"))
    speedup = r.get("scrape", {}).get("ours", {}).get("speedup_vs_generate_latest")
    options = asgi.get("options_added_us", {})
    rows = [
        _target("ASGI overhead / prometheus_client floor",
                ours_asgi / floor if ours_asgi is not None and floor else None,
                "<= 1", lambda x: x <= 1),
        _target("ASGI overhead / prometheus-fastapi-instrumentator's",
                pfi.get("ours_over_this"), "<= 0.125", lambda x: x <= 0.125),
        _target("ASGI overhead at 1,000 routes / at 1 route (full app)", flat,
                "0.85 - 1.15", lambda x: 0.85 <= x <= 1.15, _scaling_noise(scaling)),
        _target("ASGI overhead at 1,000 routes / at 1 route (router stub)", flat_stub,
                "0.85 - 1.15", lambda x: 0.85 <= x <= 1.15),
        _target("Flask overhead / prometheus-flask-exporter's", flask_ratio,
                "<= 0.25", lambda x: x <= 0.25),
        _target("scrape speed-up vs generate_latest (5,000 label sets)", speedup,
                ">= 10", lambda x: x >= 10),
        *(
            _target(f"ASGI: {option} add, µs/request", options.get(option), "< 1",
                    lambda x: x < 1)
            for option in ("correlation IDs", "exemplars (sampled span)")
        ),
        _target("Flask: correlation IDs add, µs/request",
                r.get("wsgi_flask", {}).get("options_added_us", {}).get("correlation IDs"),
                "< 1", lambda x: x < 1),
        *(
            _target(f"e2e {server}: overhead / prometheus-fastapi-instrumentator's",
                    _e2e_ratio(r, server), "<= 0.1", lambda x: x <= 0.1)
            for server in ("uvicorn asyncio+h11", "uvicorn uvloop+httptools")
        ),
    ]
    return _table(["target", "measured", "goal", "status"], rows)


def _scaling(section: Row) -> list[str]:
    sizes = list(section["sizes"])
    first = next(iter(section["sizes"].values()))
    baseline = first["baseline"]
    rows = []
    for name in first["variants"]:
        cells = [f"**{name}**" if name == "ours" else name]
        for size in sizes:
            v = section["sizes"][size]["variants"].get(name, {})
            cells.append(_f(v.get("median_us" if name == baseline else "overhead_us")))
        cells.append(_f(section["overhead_ratio_last_to_first"].get(name), 3))
        rows.append(cells)
    header = [f"variant ({baseline}: median µs, others: overhead µs)",
              *[f"{s} extra routes" for s in sizes], f"{sizes[-1]} / {sizes[0]}"]
    return _table(header, rows)


def _scrape(section: Row) -> list[str]:
    rows = []
    for name in ("generate_latest", "generate_latest_no_created", "ours"):
        v = section.get(name, {})
        if "render_ms" not in v:
            rows.append([name, "-", "-", "-", "-", "-", "-", v.get("reason", "")])
            continue
        rows.append([name, _f(v["render_ms"]), _f(v["cold_render_ms"]), _f(v["gzip9_ms"]),
                     f"{v['bytes_plain']:,}", f"{v['bytes_gzip9']:,}", f"{v['sample_lines']:,}",
                     _f(v.get("speedup_vs_generate_latest"))])
    header = ["renderer", "render ms (median, warm)", "first render ms", "gzip -9 ms",
              "bytes plain", "bytes gzip -9", "sample lines", "speed-up vs generate_latest"]
    return _table(header, rows)


def _e2e(section: Row) -> list[str]:
    if "error" in section:
        return [f"Not run: {section['error']}", ""]
    params = section["params"]
    rows = []
    for server in params.get("servers", ("uvicorn", "gunicorn")):
        variants = section.get(server, {})
        if "skipped" in variants:
            rows.append([server, "-", *["-"] * 8, f"skipped: {variants['skipped']}"])
            continue
        for name, v in variants.items():
            if v["status"] != "ok":
                rows.append([server, name, *["-"] * 8, v["reason"].replace("|", "/")])
                continue
            rows.append([server, f"**{name}**" if name == "ours" else name,
                         _f(v["requests_per_sec"], 0), _f(v["latency_p99_ms"]),
                         _f(v.get("rps_vs_bare"), 3), _f(v.get("overhead_us")),
                         _f(v.get("paired_overhead_us")), _f(v.get("server_cpu_us")),
                         _f(v.get("server_cpu_overhead_us")), _f(v.get("ours_over_this"), 3),
                         "ok"])
    header = ["server", "variant", "requests/s", "p99 ms", "vs bare", "overhead µs/request",
              "paired overhead µs", "server CPU µs/request", "server CPU overhead µs",
              "ours/this overhead", "status"]
    return [f"`wrk {params['wrk']}`, rounds: {params['rounds']} (interleaved, shuffled),"
            " medians. Overhead = 1e6/rps(variant) - 1e6/rps(bare); server CPU = the"
            " server process's user + system time over the timed run / requests.", "",
            *_table(header, rows)]


def _e2e_ratio(r: Row, server: str) -> float | None:
    """ours/prometheus-fastapi-instrumentator end-to-end overhead on ``server``."""
    rows = r.get("e2e", {}).get(server, {})
    return rows.get("prometheus-fastapi-instrumentator", {}).get("ours_over_this")


def markdown(r: Row) -> str:
    meta = r["meta"]
    out = [
        "# Benchmark results",
        "",
        f"- date: {meta['date']} (mode: {'quick' if meta['quick'] else 'full'})",
        f"- machine: {meta['nproc']} cores, {meta['cpu_model']}, {meta['platform']}",
        f"- Python {meta['python']} ({meta['python_implementation']}),"
        f" git {meta['git_revision']}",
        "",
        "Overhead = median(variant) - median(bare), in µs per request. Paired overhead = median"
        " over rounds of (variant - bare) from the same round. ours/this = our overhead divided"
        " by that variant's overhead (smaller is better).",
        "",
        "## Targets",
        "",
        *_targets(r),
    ]
    if "asgi" in r:
        a = r["asgi"]
        p = a["params"]
        out += ["## ASGI in-process (Starlette, GET /users/42)", "",
                f"{p['repeats']} interleaved rounds x {p['n_per_batch']} requests.", "",
                *_variant_table(a),
                f"prometheus_client floor ({a['floor']['description']}):"
                f" **{_f(a['floor']['floor_us'])} µs**;"
                f" ours / floor: {_f(a['ours_over_floor'], 3)}",
                "",
                f"Our counter read back after driving 25 requests: {a['ours_counts_verified']}",
                ""]
    if "asgi_scaling" in r:
        p = r["asgi_scaling"]["params"]
        out += ["## ASGI route-count scaling (hit route last)", "",
                f"{p['repeats']} interleaved rounds x {p['n_per_batch']} requests per size.", "",
                *_scaling(r["asgi_scaling"])]
        if "router_stub" in r["asgi_scaling"]:
            out += ["### The same with the router pre-resolved (router stub)", "",
                    "The baseline is a stub that writes into the scope what Starlette's router"
                    " writes after matching the hit route (`router`, `route`, `endpoint`,"
                    " `path_params`) and answers, without matching; ours wraps it. This takes"
                    " the router's own O(routes) cost, and its noise, out of the baseline.",
                    "", *_scaling(r["asgi_scaling"]["router_stub"])]
    for key, title in (("wsgi_flask", "WSGI in-process: Flask"),
                       ("wsgi_django", "WSGI in-process: Django")):
        if key in r:
            out += [f"## {title}", ""]
            if "error" in r[key]:
                out += [f"Not run: {r[key]['error']}", ""]
                continue
            p = r[key]["params"]
            out += [f"{p['repeats']} interleaved rounds x {p['n_per_batch']} requests.", "",
                    *_variant_table(r[key])]
            if "ours_counts_verified" in r[key]:
                out += ["Our counter read back after driving 25 requests:"
                        f" {r[key]['ours_counts_verified']}", ""]
    if "scrape" in r:
        out += ["## Scrape: 200 routes x 5 methods x 5 statuses = 5,000 label sets"
                " (counter + histogram)", "", *_scrape(r["scrape"])]
        if "same_samples" in r["scrape"].get("ours", {}):
            out += [f"Our sample lines match generate_latest's (without _created):"
                    f" {r['scrape']['ours']['same_samples']}", ""]
    if "e2e" in r:
        out += ["## End to end (1 worker, loopback)", "", *_e2e(r["e2e"])]
    versions = [[k, v or "not installed"] for k, v in meta["packages"].items()]
    out += ["## Versions", "", *_table(["package", "version"], versions)]
    return "\n".join(out)


def plot(r: Row, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels: list[tuple[str, dict[str, float]]] = []
    if "asgi" in r:
        # Our options are measured against ours, not the bare app: not on this chart.
        bars = {n: v["overhead_us"] for n, v in r["asgi"]["variants"].items()
                if v["overhead_us"] is not None and v.get("kind") != "option"}
        if r["asgi"]["floor"]["floor_us"] is not None:
            bars["prometheus_client floor"] = r["asgi"]["floor"]["floor_us"]
        panels.append(("ASGI (Starlette)", bars))
    for key, title in (("wsgi_flask", "WSGI (Flask)"), ("wsgi_django", "WSGI (Django)")):
        if "variants" in r.get(key, {}):
            panels.append((title, {n: v["overhead_us"] for n, v in r[key]["variants"].items()
                                   if v["overhead_us"] is not None}))
    panels = [(t, b) for t, b in panels if b]
    if not panels:
        return False
    height = sum(0.9 + 0.35 * len(bars) for _, bars in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, height), squeeze=False)
    for ax, (title, bars) in zip(axes[:, 0], panels, strict=True):
        names = sorted(bars, key=bars.__getitem__)
        colors = ["tab:green" if n == "ours" else "tab:gray" if "floor" in n else "tab:blue"
                  for n in names]
        ax.barh(names, [bars[n] for n in names], color=colors)
        for y, n in enumerate(names):
            ax.text(bars[n], y, f" {bars[n]:.1f}", va="center", fontsize=8)
        ax.set_title(f"{title}: overhead over bare app (µs/request, lower is better)", fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(r: Row, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "results.md"]
    written[0].write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(markdown(r), encoding="utf-8")
    if plot(r, out_dir / "overhead.png"):
        written.append(out_dir / "overhead.png")
    return written

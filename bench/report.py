"""Turn the benchmark's numbers into one Markdown report (and keep the JSON beside it)."""

from __future__ import annotations

from typing import Any

NAMES = {"a": "(a) stock, sqlite", "b": "(b) stock, PG + S3", "c": "(c) mlflow-stack"}


def _ratio(better: float | None, worse: float | None) -> str:
    if not better or not worse:
        return "-"
    return f"{worse / better:.1f}x"


def _ratios(results: dict[str, Any], keys: list[str], value: Any, *, higher: bool) -> list[str]:
    """How many times better (c) is than each other set-up, for one number."""
    if "c" not in results:
        return []
    ours = value(results["c"])
    return [
        _ratio(value(results[k]), ours) if higher else _ratio(ours, value(results[k]))
        for k in keys
        if k != "c"
    ]


def _cells(results: dict[str, Any], keys: list[str], get: Any) -> list[str]:
    return [get(results[k]) if k in results else "-" for k in keys]


def render(meta: dict[str, Any], results: dict[str, Any]) -> str:
    keys = [k for k in "abc" if k in results]
    head = [NAMES[k] for k in keys]
    ratios = [f"{k}/c" for k in keys if k != "c"] if "c" in results else []
    lines = [
        f"# mlflow-stack benchmark ({meta['mode']})",
        "",
        f"{meta['date']} · {meta['machine']} · MLflow {meta['mlflow']} · "
        f"command: `{meta['command']}`",
        "",
        "Ratios say how many times better (c) is: time ratios for latency, rate ratios for "
        "throughput.",
        "",
    ]

    first = results[keys[0]]
    if "latency" in first:
        lines += _latency(results, keys, head, ratios)
    if "ingestion" in first:
        lines += _ingestion(results, keys, head, ratios)
    if "busy" in first:
        lines += _busy(results, keys, ratios)
    if "search" in first:
        lines += _search(results, keys, head, ratios)
    if "artifacts" in first:
        lines += _artifacts(results, keys)
    lines += _memory(results, keys)
    if "recovery" in first:
        lines += _recovery(results, keys)
    return "\n".join(lines) + "\n"


def _latency(
    results: dict[str, Any], keys: list[str], head: list[str], ratios: list[str]
) -> list[str]:
    lines = [
        "## Small requests over keep-alive, Python client (p50 / p95 ms)",
        "",
        *_header("call", *head, *(f"{r} (p50)" for r in ratios)),
    ]
    for call in ("log_param", "log_metric", "get_run", "search_runs"):
        cells = _cells(
            results,
            keys,
            lambda r, c=call: f"{r['latency'][c]['p50_ms']} / {r['latency'][c]['p95_ms']}",
        )
        row = _ratios(results, keys, lambda r, c=call: r["latency"][c]["p50_ms"], higher=False)
        lines.append(f"| {call} | " + " | ".join(cells + row) + " |")
    return [*lines, ""]


def _ingestion(
    results: dict[str, Any], keys: list[str], head: list[str], ratios: list[str]
) -> list[str]:
    lines = [
        "## Ingestion: each run logs 20 params and 1,000 points in 5 `log_batch` calls",
        "",
        "Metric points per second (runs per second, errors). Every error counts: the client "
        "does not retry.",
        "",
        *_header("clients", *head, *ratios),
    ]
    for index, entry in enumerate(results[keys[0]]["ingestion"]):
        cells = _cells(
            results,
            keys,
            lambda r, i=index: (
                f"{r['ingestion'][i]['points_per_s']:,} ({r['ingestion'][i]['runs_per_s']}, "
                f"{r['ingestion'][i]['errors']})"
            ),
        )
        row = _ratios(
            results, keys, lambda r, i=index: r["ingestion"][i]["points_per_s"], higher=True
        )
        lines.append(f"| {entry['clients']} | " + " | ".join(cells + row) + " |")
    return [*lines, ""]


def _search(
    results: dict[str, Any], keys: list[str], head: list[str], ratios: list[str]
) -> list[str]:
    sweep = results[keys[0]]["search"]["sweep"]
    lines = [
        "## `search_runs` in one experiment as it grows (p50 / p95 ms, 100 runs a page)",
        "",
        *_header("query", "runs", *head, *(f"{r} (p95)" for r in ratios)),
    ]
    queries = [q for q in sweep[0] if isinstance(sweep[0][q], dict)]
    for query in queries:
        for index, entry in enumerate(sweep):

            def timing(r: dict[str, Any], q: str = query, i: int = index) -> dict[str, Any]:
                return r["search"]["sweep"][i][q]

            cells = _cells(
                results, keys, lambda r, t=timing: f"{t(r)['p50_ms']} / {t(r)['p95_ms']}"
            )
            row = _ratios(results, keys, lambda r, t=timing: t(r)["p95_ms"], higher=False)
            lines.append(f"| {query} | {entry['runs']:,} | " + " | ".join(cells + row) + " |")
    growth = _growth(results, keys, sweep)
    return [*lines, "", *growth]


def _growth(results: dict[str, Any], keys: list[str], sweep: list[dict[str, Any]]) -> list[str]:
    """How much p95 grows from the smallest size to the largest, per set-up and query."""
    if len(sweep) < 2:
        return []
    small, large = sweep[0]["runs"], sweep[-1]["runs"]
    lines = [f"p95 growth from {small:,} to {large:,} runs:", ""]
    for key in keys:
        own = results[key]["search"]["sweep"]
        parts = [
            f"{query} {own[-1][query]['p95_ms'] / own[0][query]['p95_ms']:.1f}x"
            for query in own[0]
            if isinstance(own[0][query], dict) and own[0][query]["p95_ms"]
        ]
        lines.append(f"- ({key}) " + ", ".join(parts))
    return [*lines, ""]


def _artifacts(results: dict[str, Any], keys: list[str]) -> list[str]:
    lines = [
        "## Artifacts (MB/s, upload / download)",
        "",
        "Proxied: through the server with the MLflow client. UI: the files one by one through",
        "`GET /get-artifact`, the route the UI downloads from. Direct: boto3 against the same S3.",
        "",
        *_header(
            "files",
            *(f"{NAMES[k]} proxied" for k in keys),
            *(f"{NAMES[k]} UI download" for k in keys),
            "(c) direct S3",
            "(c) proxied / direct upload",
        ),
    ]
    for group in results[keys[0]]["artifacts"]:
        cells = _cells(
            results,
            keys,
            lambda r, g=group: (
                f"{r['artifacts'][g]['proxied_up_MBps']} / {r['artifacts'][g]['proxied_down_MBps']}"
            ),
        )
        ui = _cells(
            results, keys, lambda r, g=group: f"{r['artifacts'][g].get('ui_down_MBps', '-')}"
        )
        c = results.get("c", {}).get("artifacts", {}).get(group, {})
        direct = (
            f"{c['direct_up_MBps']} / {c['direct_down_MBps']}" if "direct_up_MBps" in c else "-"
        )
        share = f"{100 * c['proxied_up_vs_direct']:.0f} %" if "proxied_up_vs_direct" in c else "-"
        lines.append(f"| {group} | " + " | ".join([*cells, *ui, direct, share]) + " |")
    return [*lines, ""]


def _memory(results: dict[str, Any], keys: list[str]) -> list[str]:
    lines = [
        "## Memory (MB): resident (RSS) / proportional (PSS)",
        "",
        *_header("set-up", "idle", "after load", "processes after load (RSS / PSS)"),
    ]
    for k in keys:
        idle, loaded = results[k]["memory_idle"], results[k]["memory_after_load"]
        parts = ", ".join(
            f"{name} {v['MB']} / {v.get('PSS_MB', '?')}"
            + (f" ({v['count']})" if v["count"] > 1 else "")
            for name, v in loaded["processes"].items()
        )
        lines.append(f"| {NAMES[k]} | {_both(idle)} | {_both(loaded)} | {parts} |")
    return lines


def _both(memory: dict[str, Any]) -> str:
    return f"{memory['total_MB']} / {memory.get('total_PSS_MB', '?')}"


def _header(*cells: str) -> list[str]:
    return ["| " + " | ".join(cells) + " |", "|---" * len(cells) + "|"]


def _recovery(results: dict[str, Any], keys: list[str]) -> list[str]:
    lines = [
        "",
        "## Back after a crash: kill -9 of the whole server, seconds until a logged-in call "
        "answers again",
        "",
        *_header("set-up", "each crash (a minute apart)"),
    ]
    for k in keys:
        figures = results[k].get("recovery")
        cell = ", ".join(f"{s:g}" for s in figures["serving_again_s"]) if figures else "stays down"
        lines.append(f"| {NAMES[k]} | {cell} |")
    return lines


def _busy(results: dict[str, Any], keys: list[str], ratios: list[str]) -> list[str]:
    first = results[keys[0]]["busy"]
    lines = [
        f"## A busy team: {first['clients']} clients, mixed calls, {first['seconds']:g} s",
        "",
        "log_batch, get_run, search_runs, artifact listing and the UI's run search, back to "
        "back over keep-alive; every non-2xx answer counts as an error.",
        "",
        *_header("set-up", "req/s", "p50 ms", "p99 ms", "errors", "p50 / p99 per call (ms)"),
    ]
    for k in keys:
        b = results[k]["busy"]
        calls = ", ".join(f"{op} {v['p50_ms']} / {v['p99_ms']}" for op, v in b["by_call"].items())
        lines.append(
            f"| {NAMES[k]} | {b['req_per_s']:,} | {b['p50_ms']} | {b['p99_ms']} | {b['errors']} "
            f"| {calls} |"
        )
    if "c" in results and ratios:
        c = results["c"]["busy"]["req_per_s"]
        others = ", ".join(
            f"(c) serves {_ratio(results[k]['busy']['req_per_s'], c)} the requests of ({k})"
            for k in keys
            if k != "c"
        )
        lines += ["", others]
    return [*lines, ""]

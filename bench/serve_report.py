"""The Markdown report of bench/serve.py: the gRPC and HTTP tables, the per-request profile, and the targets."""

from __future__ import annotations

import statistics

from report import errors_cell

PEERS = ("MLServer", "PyTriton", "KServe")
# Large requests as before the speed work: the file's own Gemms and glibc's malloc thresholds.
BEFORE = "forwardpass, 1 worker, the large-request path before (--no-columns-inside, FORWARDPASS_MALLOC=glibc)"
# The large-request path switched off, in part and whole, beside forwardpass 1 worker.
LARGE_BEFORE = ("forwardpass, 1 worker, --no-columns-inside", BEFORE)
# The anchors of the cost-per-request targets (bench/bare_inference.py): forwardpass's onnxruntime call
# alone behind each door, one process, beside forwardpass with 1 worker in the same run.
BARE_INFERENCE = {"gRPC": "bare inference gRPC, 1 process", "HTTP": "bare inference HTTP, 1 process"}
RATIO_OURS = "forwardpass, 1 worker"  # with the token and metrics on, as deployed
UNGUARDED = "forwardpass, 1 worker, no token, no metrics"
# The servers the ratios compare: up together, and in the ratio cells measured in alternating windows.
IN_TURN = (*BARE_INFERENCE.values(), RATIO_OURS, UNGUARDED)
BARE_INFERENCE_TEXT = (
    "forwardpass with 1 worker against the bare inference server of the same door (bench/bare_inference.py: "
    "one process on the same stack, the same onnxruntime session and call, no checks, statistics, limits or "
    "token), measured in the same run: both servers (and forwardpass without token and metrics) are up "
    "together and take the cell's load in alternating windows (bench/paired.py: a quarter of a second each "
    "over gRPC, half a second over HTTP, 3 s per server in all, the order reversed every round), so that "
    "both sides of a ratio sample the same seconds of this shared machine."
)
RATIO_TARGET = 0.9  # forwardpass req/s / the bare inference server's, in every cell below
# The cells the targets name: (door, cell, in flight, the body it sends).
RATIO_CELLS = (
    ("HTTP", "JSON batch 1", 1, "JSON"),
    ("HTTP", "JSON batch 1", 16, "JSON"),
    ("HTTP", "65,536 rows", 1, "binary"),
    ("gRPC", "batch 1", 1, "protobuf"),
    ("gRPC", "batch 1", 16, "protobuf"),
    ("gRPC", "65,536 rows", 1, "protobuf"),
)
PYTRITON = (
    "PyTriton 0.7.0 is Triton (PyTriton: a Python model behind Triton's front end): Triton's server and "
    "dynamic batcher calling a Python function that runs onnxruntime, not Triton's onnxruntime backend."
)


HTTP_LOAD = (
    "Load: h2load --h1 (nghttp2-client, C; one HTTP/1.1 connection per request in flight, one thread), the "
    "same request bytes for every server: batch 1 as JSON, 65,536 rows with Triton's binary tensor extension "
    "(JSON header, then the raw float32 rows, binary output asked for) where the server has it, else the "
    "same rows as JSON. Every answer of the measured window is in h2load's log: any status but 2xx is an "
    "error; p50 and p99 are over all 2xx answers (answers whose status line came during the warm-up, which "
    "h2load logs with status 0, are left out). A C client, so that the client is not the limit; client "
    "and servers still share the machine's cores."
)


def http_markdown(report: dict) -> list[str]:
    """The HTTP/REST table and its verdicts; nothing for a report from before the HTTP cells."""
    cells = report.get("http_cells")
    if not cells:
        return []
    cores = report["machine"]["cores"]
    lines = [
        "",
        "## HTTP/REST (same run)",
        "",
        f"{report['runs']} run(s) per cell; medians, with req/s min-max over runs. {HTTP_LOAD} The bare HTTP "
        "server is forwardpass's HTTP stack (uvicorn, httptools, uvloop, a raw ASGI app), one process, "
        "answering the same bytes forwardpass answers without routing, decoding or inference: the ceiling. "
        "KServe 0.21.0 is kserve.ModelServer (REST, 1 worker) with a small kserve.Model running onnxruntime."
        + (f" {PYTRITON}" if any(c["target"].startswith("PyTriton") for c in cells) else ""),
        "",
        "| server | cell | body | c | req/s (min-max) | rows/s | p50 ms | p99 ms | server cores | client cores | "
        "machine cores | server CPU ms/req | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['target']} | {c['cell']} | {c.get('encoding', '-')} | {c['concurrency']} | "
            f"{c['req_per_s']:,.0f} ({c['req_per_s_min']:,.0f}-{c['req_per_s_max']:,.0f}) | "
            f"{c['rows_per_s']:,.0f} | {_f(c['p50_ms'])} | {_f(c['p99_ms'])} | {c['server_cores']:.2f} | "
            f"{c['client_cores']:.2f} | {c['machine_cores']:.2f} | {_f(c['server_cpu_ms_per_req'], 3)} | "
            f"{errors_cell(c['errors'])} |"
        )
    bound = [c for c in cells if c["machine_cores"] >= 0.9 * cores]
    lines += [
        "",
        f"Cells where the whole machine was at least 90% busy ({0.9 * cores:.1f} of {cores} cores): "
        + (", ".join(f"{c['target']} c={c['concurrency']} {c['cell']}" for c in bound) or "none")
        + ".",
        "",
        "## HTTP/REST against the targets",
        "",
    ]
    lines += [f"- {line}" for line in http_verdicts(report)]
    return lines


def http_headline(report: dict) -> list[str]:
    """For docs/speed.md: the HTTP table beside the gRPC one, and its verdicts."""
    cells = report.get("http_cells")
    if not cells:
        return []
    small = [c for c in cells if c["cell"] == "JSON batch 1"]
    large = {c["target"]: c for c in cells if c["cell"] == "65,536 rows"}
    lines = [
        "",
        "Over HTTP/REST, same run (h2load --h1, a C client; JSON batch 1; 65,536 rows with Triton's binary "
        "extension where the server has it):",
        "",
        "| server | c=1 req/s | c=16 | c=64 | p99 ms at c=64 | 65,536-row requests, rows/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target in dict.fromkeys(c["target"] for c in cells):
        by_c = {c["concurrency"]: c for c in small if c["target"] == target}
        big = large.get(target)
        rows = f"{big['rows_per_s'] / 1e6:.2f} M ({big.get('encoding', '?')})" if big else "-"
        lines.append(f"| {target} | {_batch1_cells(by_c)} | {rows} |")
    lines.append("")
    lines += [f"- {line}" for line in http_verdicts(report)]
    return lines


def against_best_peer(cells: list[dict], cell: str, concurrency: int) -> tuple[dict, dict, float, bool] | None:
    """The best forwardpass cell and the best peer's at one load: the req/s ratio, and whether ours has
    a lower p99 than every peer's (None when either side was not measured)."""
    at = [c for c in cells if c["cell"] == cell and c["concurrency"] == concurrency]
    peers = [c for c in at if c["target"].startswith(PEERS)]
    ours = [c for c in at if c["target"].startswith("forwardpass,")]
    if not peers or not ours:
        return None
    best_peer, best = (max(group, key=lambda c: c["req_per_s"]) for group in (peers, ours))
    lower = all(best["p99_ms"] is not None and best["p99_ms"] < (c["p99_ms"] or float("inf")) for c in peers)
    return best, best_peer, best["req_per_s"] / best_peer["req_per_s"], lower


def http_verdicts(report: dict) -> list[str]:
    """The HTTP targets, as ratios within this run: forwardpass against the bare HTTP ceiling and the peers."""
    cells = report.get("http_cells") or []
    n = report["workers"]
    by = {(c["target"], c["cell"], c["concurrency"]): c for c in cells}
    bare = by.get(("bare HTTP, 1 process", "JSON batch 1", 1))
    out = []
    for label in ("1 worker", f"{n} workers"):
        ours = by.get((f"forwardpass, {label}", "JSON batch 1", 1))
        if ours and bare:
            what = f"HTTP JSON batch 1 at c=1, forwardpass {label} / bare HTTP"
            out.append(ratio_verdict(what, ours["req_per_s"], bare["req_per_s"], "{:,.0f} req/s", ">=", 0.8))
    peer_cells = [c for c in cells if c["target"].startswith(PEERS)]
    ours_cells = [c for c in cells if c["target"].startswith("forwardpass,")]
    for concurrency in (16, 64):
        against = against_best_peer(cells, "JSON batch 1", concurrency)
        if against:
            best, best_peer, ratio, lower = against
            out.append(
                f"HTTP JSON batch 1 at c={concurrency}, best forwardpass ({best['target']}) / best peer "
                f"({best_peer['target']}): **{ratio:.2f}x** req/s (target >= 1.5x with a lower p99): "
                f"{'met' if ratio >= 1.5 and lower else 'not met'}; p99 {_f(best['p99_ms'], 1)} ms against "
                f"{_f(best_peer['p99_ms'], 1)} ms, {'lower' if lower else 'not lower'} than every peer's"
            )
    large = [c for c in ours_cells if c["cell"] == "65,536 rows"]
    peer_large = [c for c in peer_cells if c["cell"] == "65,536 rows"]
    if large and peer_large:
        best, top = (max(group, key=lambda c: c["rows_per_s"]) for group in (large, peer_large))
        ratio = best["rows_per_s"] / top["rows_per_s"] if top["rows_per_s"] else float("inf")
        out.append(
            f"HTTP 65,536-row requests, best forwardpass ({best['target']}, {best.get('encoding')}) / best peer "
            f"({top['target']}, {top.get('encoding')}): **{ratio:.2f}x** rows/s "
            f"({best['rows_per_s'] / 1e6:.2f} M vs {top['rows_per_s'] / 1e6:.2f} M; target >= 2x): "
            f"{'met' if ratio >= 2 else 'not met'}"
        )
    bare_large = by.get(("bare HTTP, 1 process", "65,536 rows", 1))
    if large and bare_large:
        best = max(large, key=lambda c: c["rows_per_s"])
        out.append(
            f"HTTP 65,536-row requests, best forwardpass / bare HTTP for the same bytes: "
            f"**{best['rows_per_s'] / bare_large['rows_per_s']:.2f}x** rows/s (no target; the ceiling)"
        )
    errors = sum(sum(c["errors"].values()) for c in cells)
    out.append(f"HTTP answers other than 2xx, all servers and cells: **{errors}**")
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    n = report["workers"]
    pytriton = f" {PYTRITON}" if any(c["target"].startswith("PyTriton") for c in report["cells"]) else ""
    lines = [
        "# Serving benchmark",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, grpcio {m['grpcio']}, "
        f"onnxruntime {m['onnxruntime']}, NumPy {m['numpy']}; {m['date']}.",
        f"{report['runs']} run(s) per cell; medians, with req/s min-max over runs. Load: bench/loadgen.py "
        "(grpc.aio, closed loop, one pre-encoded request for every server; 1 process at c=1, 2 above). "
        "Client and servers share the machine's cores. Rerun: `make bench`." + pytriton,
        "",
        "| server | cell | c | req/s (min-max) | rows/s | p50 ms | p99 ms | server cores | client cores | "
        "machine cores | server CPU ms/req | RSS MB total (largest process) | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["cells"]:
        errors = sum(c["errors"].values())
        lines.append(
            f"| {c['target']} | {c['cell']} | {c['concurrency']} | {c['req_per_s']:,.0f} "
            f"({c['req_per_s_min']:,.0f}-{c['req_per_s_max']:,.0f}) | {c['rows_per_s']:,.0f} | {_f(c['p50_ms'])} | "
            f"{_f(c['p99_ms'])} | {c['server_cores']:.2f} | {c['client_cores']:.2f} | {c['machine_cores']:.2f} | "
            f"{_f(c['server_cpu_ms_per_req'], 3)} | {c['rss_mb_total']:.0f} ({c['rss_mb_max_process']:.0f}) | "
            f"{errors} |"
        )
    cores = m["cores"]
    bound = [c for c in report["cells"] if c["machine_cores"] >= 0.9 * cores]
    lines += [
        "",
        f"Cells where the whole machine was at least 90% busy ({0.9 * cores:.1f} of {cores} cores), so the "
        "load generator, not only the server, limited them: "
        + (", ".join(f"{c['target']} c={c['concurrency']} {c['cell']}" for c in bound) or "none")
        + ".",
    ]
    if report.get("profile"):
        p = report["profile"]
        lines += [
            "",
            "## One request, end to end (forwardpass, 1 worker, batch 1, c=1)",
            "",
            "| decode µs | onnxruntime µs | encode µs | gRPC, transport and client µs | p50 µs |",
            "|---:|---:|---:|---:|---:|",
            f"| {p['decode_us']:.1f} | {p['infer_us']:.1f} | {p['encode_us']:.1f} | "
            f"{p['grpc_and_client_us']:.0f} | {p['p50_us']:.0f} |",
        ]
    if report.get("batching"):
        lines += [
            "",
            "## Dynamic batching at c=64 (batch-1 requests)",
            "",
            "| workers | requests | onnxruntime runs | runs per request | req/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for workers, b in report["batching"].items():
            lines.append(
                f"| {workers} | {b['requests']:,} | {b['onnxruntime_runs']:,} | {b['runs_per_request']:.3f} | "
                f"{b['req_per_s']:,.0f} |"
            )
    if report.get("h2load"):
        lines += [
            "",
            "## h2load (nghttp2, C): the same bytes without a Python client",
            "",
            "| server | connections x streams | req/s | mean ms | HTTP/2 failed | gRPC failed (server's count) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for h in report["h2load"]:
            lines.append(
                f"| {h['target']} | {h['concurrency']} | {h.get('req_per_s', 0):,.0f} | "
                f"{_f(h.get('mean_ms'))} | {h.get('failed', '?')} | {h.get('grpc_failed', '-')} |"
            )
    lines += stack_choice(report)
    lines += perf_analyzer_table(report, "## ")
    lines += ["", "## Against the targets", ""] + [f"- {line}" for line in verdicts(report, n)]
    lines += http_markdown(report)
    ratios = ratio_table(report)
    if ratios:
        lines += [
            "",
            "## Against the bare inference servers (cost per request)",
            "",
            f"{BARE_INFERENCE_TEXT} {report['runs']} run(s); each ratio is taken within a run, then the median "
            "(min-max over runs).",
            "",
            *ratios,
        ]
    guards = safeguard_table(report)
    if guards:
        lines += ["", "## What the token and metrics cost", "", SAFEGUARD_TEXT, "", *guards]
    return "\n".join([*lines, ""])


SAFEGUARD_TEXT = (
    f"{RATIO_OURS} (as deployed: the token checked on every call, metrics served) over {UNGUARDED}, in the "
    "same run, cells and alternating windows. Statistics and the robustness limits are always on; their "
    "share of a request is in bench/results/profile.md (stages stats, validate, read)."
)


def safeguard_table(report: dict) -> list[str]:
    """Guarded over unguarded forwardpass in the ratio cells; nothing where the unguarded one was not run."""
    found = bare_inference_ratios(report, dict.fromkeys(BARE_INFERENCE, UNGUARDED))
    if not found:
        return []
    lines = ["| door | cell | c | with / without (min-max) | req/s with / without | server CPU ms/req with / without |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in found:
        lines.append(
            f"| {r['door']} | {r['cell']} | {r['concurrency']} | **{r['ratio']:.2f}x** ({r['ratio_min']:.2f}-"
            f"{r['ratio_max']:.2f}) | {r['ours_req_per_s']:,.0f} / {r['bare_req_per_s']:,.0f} | "
            f"{_f(r['ours_server_cpu_ms_per_req'], 3)} / {_f(r['bare_server_cpu_ms_per_req'], 3)} |"
        )
    return lines


def bare_inference_ratios(report: dict, anchors: dict[str, str] = BARE_INFERENCE) -> list[dict]:
    """Each cell of RATIO_CELLS measured on both sides: req/s, p99 and server CPU per request of each, and
    forwardpass's req/s over the anchor's of that door (the bare inference server's), run by run (the runs
    measured on both)."""
    found = []
    alternated = report.get("paired")
    for door, cell, concurrency, body in RATIO_CELLS:
        if alternated:  # bench/paired.py's alternating windows; a report from before them has only the cells
            raw = [r for r in alternated if r["door"] == door]
        else:
            raw = report.get("http_raw" if door == "HTTP" else "raw") or []
        ours, bare = (_by_run(raw, (target, cell, concurrency)) for target in (RATIO_OURS, anchors[door]))
        paired = sorted(run for run in ours.keys() & bare.keys() if bare[run]["req_per_s"])
        if not paired:
            continue

        def median(side: dict[int, dict], key: str, paired=paired) -> float | None:
            values = [side[run][key] for run in paired if side[run][key] is not None]
            return statistics.median(values) if values else None

        ratios = [ours[run]["req_per_s"] / bare[run]["req_per_s"] for run in paired]
        found.append({
            "door": door, "cell": cell, "concurrency": concurrency, "body": body, "runs": len(paired),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            **{f"{side}_{key}": median(runs, key) for side, runs in (("ours", ours), ("bare", bare))
               for key in ("req_per_s", "p99_ms", "server_cpu_ms_per_req")},
        })  # fmt: skip
    return found


def _by_run(raw: list[dict], key: tuple[str, str, int]) -> dict[int, dict]:
    """One target's results in one cell, (target, cell, in flight), by run."""
    return {r["run"]: r for r in raw if (r["target"], r["cell"], r["concurrency"]) == key}


def ratio_table(report: dict) -> list[str]:
    """The cost-per-request targets as a Markdown table; nothing where the bare inference servers were not run."""
    found = bare_inference_ratios(report)
    if not found:
        return []
    lines = [
        "| door | cell | body | c | forwardpass req/s | bare inference req/s | forwardpass / bare (min-max) | "
        "target | p99 ms, forwardpass / bare | server CPU ms/req, forwardpass / bare | CPU ratio |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in found:
        cpu = (r["ours_server_cpu_ms_per_req"], r["bare_server_cpu_ms_per_req"])
        cpu_ratio = f"{cpu[0] / cpu[1]:.2f}x" if all(cpu) else "-"
        met = "met" if r["ratio"] >= RATIO_TARGET else "not met"
        lines.append(
            f"| {r['door']} | {r['cell']} | {r['body']} | {r['concurrency']} | {r['ours_req_per_s']:,.0f} | "
            f"{r['bare_req_per_s']:,.0f} | **{r['ratio']:.2f}x** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | "
            f">= {RATIO_TARGET}x: {met} | {_f(r['ours_p99_ms'])} / {_f(r['bare_p99_ms'])} | "
            f"{_f(cpu[0], 3)} / {_f(cpu[1], 3)} | {cpu_ratio} |"
        )
    return lines


def headline(report: dict) -> str:
    """For docs/speed.md: batch-1 req/s per server at each concurrency, and the verdicts."""
    cells = [c for c in report["cells"] if c["cell"] == "batch 1"]
    large = {c["target"]: c for c in report["cells"] if c["cell"] == "65,536 rows"}
    targets = list(dict.fromkeys(c["target"] for c in cells))
    lines = [
        "| server | c=1 req/s | c=16 | c=64 | p99 ms at c=64 | 65,536-row requests, rows/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        by_c = {c["concurrency"]: c for c in cells if c["target"] == target}
        rows_per_s = large[target]["rows_per_s"] if target in large else None
        lines.append(f"| {target} | {_batch1_cells(by_c)} | {f'{rows_per_s / 1e6:.1f} M' if rows_per_s else '-'} |")
    m = report["machine"]
    lines += [
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['date']}; {report['runs']} runs, medians. "
        "Full table, CPU, memory, profile and h2load: bench/results/serve.md.",
    ]
    lines += perf_analyzer_table(report, "")
    lines += ["", *(f"- {line}" for line in verdicts(report, report["workers"]))]
    lines += http_headline(report)
    ratios = ratio_table(report)
    if ratios:
        lines += ["", f"Cost per request: {BARE_INFERENCE_TEXT} Ratios within each run, medians:", "", *ratios]
    return "\n".join(lines) + "\n"


def stack_choice(report: dict) -> list[str]:
    """The figures that decide sync grpc.server against grpc.aio for forwardpass's own handler."""
    cells = {(c["target"], c["concurrency"]): c for c in report["cells"] if c["cell"] == "batch 1"}
    rows = []
    for concurrency in (1, 16, 64):
        sync = cells.get(("forwardpass, 1 worker", concurrency))
        aio = cells.get(("forwardpass handler on grpc.aio, 1 process", concurrency))
        if sync and aio:
            rows.append(
                f"| {concurrency} | {sync['req_per_s']:,.0f} | {aio['req_per_s']:,.0f} | "
                f"{sync['req_per_s'] / aio['req_per_s']:.2f}x |"
            )
    if not rows:
        return []
    return [
        "",
        "## Sync grpc.server or grpc.aio, for forwardpass's handler (1 process, batch 1)",
        "",
        "| c | sync req/s | aio req/s | sync / aio |",
        "|---:|---:|---:|---:|",
        *rows,
    ]


def verdicts(report: dict, n: int) -> list[str]:
    cells = {(c["target"], c["cell"], c["concurrency"]): c for c in report["cells"]}

    def get(target: str, cell: str, c: int):
        return cells.get((target, cell, c))

    out = []
    for workers, label in ((1, "1 worker"), (n, f"{n} workers")):
        ours = get(f"forwardpass, {label}", "batch 1", 1)
        bare = get(f"bare gRPC, {'1 process' if workers == 1 else f'{n} processes'}", "batch 1", 1)
        if ours and bare:
            ratio = ours["req_per_s"] / bare["req_per_s"]
            out.append(
                f"c=1 req/s, forwardpass {label} / bare: **{ratio:.2f}x** (target >= 0.9x): "
                f"{'met' if ratio >= 0.9 else 'not met'}"
            )
    peer_cells = [c for c in report["cells"] if c["target"].startswith(PEERS)]
    ours_cells = [c for c in report["cells"] if c["target"].startswith("forwardpass,")]
    for concurrency in (16, 64):
        against = against_best_peer(report["cells"], "batch 1", concurrency)
        if against:
            best, best_peer, ratio, lower = against
            out.append(
                f"c={concurrency} req/s, best forwardpass ({best['target']}) / best peer ({best_peer['target']}): "
                f"**{ratio:.2f}x** (target >= 1.5x): {'met' if ratio >= 1.5 else 'not met'}; p99 "
                f"{best['p99_ms']:.1f} ms, {'lower' if lower else 'not lower'} than every peer's"
            )
    ours64 = get(f"forwardpass, {n} workers", "batch 1", 64)
    bare64 = get(f"bare gRPC, {n} processes", "batch 1", 64)
    if ours64 and bare64 and ours64["server_cpu_ms_per_req"] and bare64["server_cpu_ms_per_req"]:
        ratio = ours64["server_cpu_ms_per_req"] / bare64["server_cpu_ms_per_req"]
        out.append(
            f"server CPU per request at c=64, forwardpass {n} workers / bare: **{ratio:.2f}x** "
            f"({ours64['server_cpu_ms_per_req']:.3f} vs {bare64['server_cpu_ms_per_req']:.3f} ms; target <= 1.5x): "
            f"{'met' if ratio <= 1.5 else 'not met'}"
        )
    large = [c for c in ours_cells if c["cell"] == "65,536 rows"]
    peer_large = [c for c in peer_cells if c["cell"] == "65,536 rows"]
    bare_large = [c for c in report["cells"] if c["target"].startswith("bare gRPC") and c["cell"] == "65,536 rows"]
    against = ((peer_large, "best peer ({}) rows/s", 1.5), (bare_large, "bare ceiling for the same bytes", 0.7))
    for others, name, target in against if large else ():
        if others:
            best, top = (max(cells, key=lambda c: c["rows_per_s"]) for cells in (large, others))
            ratio = best["rows_per_s"] / top["rows_per_s"]
            out.append(
                f"65,536-row requests, best forwardpass / {name.format(top['target'])}: **{ratio:.2f}x** "
                f"(target >= {target}x): {'met' if ratio >= target else 'not met'}"
            )
    on = get("forwardpass, 1 worker", "65,536 rows", 1)
    for off in [c for c in report["cells"] if c["cell"] == "65,536 rows" and c["target"] in LARGE_BEFORE]:
        what = f"65,536-row requests, forwardpass 1 worker / {off['target']}"
        out.append(ratio_verdict(what, on["rows_per_s"], off["rows_per_s"], "{:,.0f} rows/s", ">=", 1.5))
    for c in (1, 16, 64):
        now, before = (
            get("forwardpass, 1 worker", "batch 1", c),
            get("forwardpass, 1 worker, 8 handler threads", "batch 1", c),
        )
        if now and before:
            ratio = now["req_per_s"] / before["req_per_s"]
            out.append(
                f"batch 1 at c={c}, forwardpass 1 worker, 2 handler threads / 8: **{ratio:.2f}x** req/s, "
                f"p99 {now['p99_ms']:.1f} vs {before['p99_ms']:.1f} ms"
            )
    out += perf_analyzer_verdicts(report)
    for workers, label in ((1, "1 worker"), (n, f"{n} workers")):
        on = get(f"forwardpass, {label}, batching", "batch 1", 64)
        off = get(f"forwardpass, {label}", "batch 1", 64)
        b = (report.get("batching") or {}).get(workers) or (report.get("batching") or {}).get(str(workers))
        if on and off:
            ratio = on["req_per_s"] / off["req_per_s"]
            runs = f"; {b['runs_per_request']:.3f} onnxruntime runs per request" if b else ""
            out.append(f"batching on / off at c=64, {label}: **{ratio:.2f}x** req/s (target: no worse){runs}")
    per_worker = [c["rss_mb_max_process"] for c in ours_cells]
    if per_worker:
        out.append(
            f"resident memory per forwardpass process: at most **{max(per_worker):.0f} MB** (target < 150 MB): "
            f"{'met' if max(per_worker) < 150 else 'not met'}"
        )
    return out


# perf_analyzer's breakdown of one request, in the order it happens.
BREAKDOWN = (
    "client_send_us",
    "network_and_server_us",
    "queue_us",
    "compute_input_us",
    "compute_infer_us",
    "compute_output_us",
    "client_recv_us",
)


def perf_analyzer_table(report: dict, heading: str) -> list[str]:
    """perf_analyzer's client and server breakdown per request, in µs; `heading` "## " for a section."""
    found = report.get("perf_analyzer") or {}
    if found.get("skipped"):
        return ["", f"perf_analyzer was left out: {found['skipped']}"]
    rows = found.get("rows")
    if not rows:
        return []
    lines = [
        "",
        f"{heading}Triton's perf_analyzer (tritonclient 2.41.0), batch 1 over gRPC, µs per request"
        + ("" if heading else ":"),
        "",
        "| server | c | infer/s | client avg | p50 | p99 | client send | network + server send/recv | server queue | "
        "compute input | compute infer | compute output | client recv |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | {r['concurrency']} | {r['error']} |")
            continue
        figures = [f"{r[key]:,.0f}" for key in ("infer_per_s", "avg_us", "p50_us", "p99_us", *BREAKDOWN)]
        lines.append(f"| {r['target']} | {r['concurrency']} | " + " | ".join(figures) + " |")
    lines += [
        "",
        f"The same call in-process (the data plane's compute infer, batch 1, a hot loop): "
        f"{found['in_process_compute_infer_us']:.1f} µs"
        + (
            f"; with 0.5 ms of sleep before each call, as between one client's requests: "
            f"{found['in_process_paced_compute_infer_us']:.1f} µs."
            if "in_process_paced_compute_infer_us" in found
            else "."
        ),
    ]
    return lines


def perf_analyzer_verdicts(report: dict) -> list[str]:
    """perf_analyzer's compute infer at 16 in flight against 1, and at 1 against the same call in-process."""
    found = report.get("perf_analyzer") or {}
    by = {(r["target"], r["concurrency"]): r for r in found.get("rows", []) if "error" not in r}
    out = []
    for target in dict.fromkeys(t for t, _ in by):
        one, sixteen = by.get((target, 1)), by.get((target, 16))
        what = f"perf_analyzer compute infer per request, {target}"
        if one and sixteen:
            sixteen_us, one_us = sixteen["compute_infer_us"], one["compute_infer_us"]
            out.append(ratio_verdict(f"{what}, c=16 / c=1", sixteen_us, one_us, "{:.0f} µs", "<=", 2))
        in_process = found.get("in_process_compute_infer_us")
        if one and in_process:
            out.append(
                ratio_verdict(f"{what}, c=1 / in-process", one["compute_infer_us"], in_process, "{:.1f} µs", "<=", 2)
            )
    return out


def ratio_verdict(what: str, ours: float, theirs: float, unit: str, sense: str, target: float) -> str:
    """One target's line: the ratio in bold, both figures in `unit` (a format), the target, met or not."""
    ratio = ours / theirs
    met = ratio >= target if sense == ">=" else ratio <= target
    figures = f"{unit.format(ours).split()[0]} vs {unit.format(theirs)}"
    return f"{what}: **{ratio:.2f}x** ({figures}; target {sense} {target}x): {'met' if met else 'not met'}"


def _batch1_cells(by_concurrency: dict) -> str:
    """One server's batch-1 req/s at c=1, 16 and 64 and its p99 at c=64, as table cells."""
    rates = " | ".join(f"{by_concurrency[c]['req_per_s']:,.0f}" if c in by_concurrency else "-" for c in (1, 16, 64))
    return f"{rates} | {_f(by_concurrency[64]['p99_ms'], 1) if 64 in by_concurrency else '-'}"


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

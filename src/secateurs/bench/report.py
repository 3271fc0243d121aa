"""The grid report, after Blalock et al. 2020 (ShrinkBench, arXiv 2003.03033): per task,
accuracy against MACs, flash and SRAM for every method and operating point (mean over
seeds, the unpruned control marked), and a leaderboard with compression ratio and
theoretical speedup beside accuracy (mean ± std), in Markdown and self-contained HTML.
"""

from __future__ import annotations

import base64
import html
import statistics
from collections import defaultdict
from pathlib import Path

from .._io import inside, safe_name, write_atomic
from ..recipe.report import _png, plt
from .grid import CONTROL
from .store import Store

AXES = (
    ("macs", "MACs"),
    ("flash_bytes", "flash (bytes)"),
    ("peak_sram_bytes", "peak SRAM (bytes)"),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[dict]) -> dict:
    """{(task, model, method, keep): summary} over seeds, with compression ratio and
    theoretical speedup against that task and model's control (same seed)."""
    control = {(r["task"], r["model"], r["seed"]): r["metrics"] for r in rows
               if r["method"] == CONTROL}  # fmt: skip
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        base = control.get((r["task"], r["model"], r["seed"]))
        if base is None:
            continue
        m = dict(r["metrics"])
        m["compression"] = base["params"] / max(m["nonzero_params"], 1)
        m["speedup"] = base["macs"] / max(m["nonzero_macs"], 1)
        groups[(r["task"], r["model"], r["method"], r["keep"])].append(m)
    out = {}
    for key, ms in groups.items():
        summary = {"seeds": len(ms)}
        for name in ("accuracy", "compression", "speedup", "macs", "flash_bytes",
                     "peak_sram_bytes", "nonzero_params", "wall_s"):  # fmt: skip
            summary[name], summary[f"{name}_std"] = _mean_std([m[name] for m in ms])
        # CPU latency is timed on float models only; instructions where C was counted
        for name in ("latency_ms", "instructions", "target_latency_ms"):
            if all(m.get(name) is not None for m in ms):
                summary[name], summary[f"{name}_std"] = _mean_std([m[name] for m in ms])
        out[key] = summary
    return out


def _pareto_plot(task: str, table: dict) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    series: dict[tuple, list] = defaultdict(list)
    for (t, model, method, keep), s in table.items():
        if t == task:
            series[(model, method)].append((keep, s))
    for ax, (metric, label) in zip(axes, AXES):
        for (model, method), points in sorted(series.items()):
            points.sort(key=lambda p: -p[0])
            xs = [s[metric] for _, s in points]
            ys = [100 * s["accuracy"] for _, s in points]
            if method == CONTROL:
                ax.plot(xs, ys, "k*", markersize=12, label=f"{model} unpruned")
            else:
                ax.errorbar(xs, ys, yerr=[100 * s["accuracy_std"] for _, s in points],
                            marker="o", capsize=2, label=f"{model} {method}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{task}: accuracy against cost (mean ± std over seeds)")
    return _png(fig)


def _leaderboard(task: str, table: dict) -> list[tuple[str, ...]]:
    rows = []
    entries = [(k, s) for k, s in table.items() if k[0] == task]
    entries.sort(key=lambda e: (e[0][1], -e[0][3], -e[1]["accuracy"]))
    for (_, model, method, keep), s in entries:
        rows.append((model, f"{keep:g}", method,
                     f"{100 * s['accuracy']:.1f} ± {100 * s['accuracy_std']:.1f}",
                     f"{s['compression']:.2f}x", f"{s['speedup']:.2f}x",
                     f"{s['flash_bytes']:,.0f}", f"{s['peak_sram_bytes']:,.0f}",
                     f"{s['latency_ms']:.3f}" if "latency_ms" in s else "-",
                     f"{s['instructions']:,.0f}" if "instructions" in s else "-",
                     f"{s['wall_s']:.0f}", str(s["seeds"])))  # fmt: skip
    return rows


HEADER = ("model", "keep", "method", "accuracy (%)", "compression", "speedup", "flash (B)",
          "peak SRAM (B)", "CPU latency (ms)", "C instructions", "wall (s)",
          "seeds")  # fmt: skip


MISSING_HEADER = ("cell", "status", "attempts", "last error")


def _html_table(header, rows) -> str:
    """A table of text cells, escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                   for r in rows)  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(rows: list[dict]) -> list[tuple[str, str, str, str]]:
    """Each cell not done: key, status, attempts, the last line of its error."""
    out = []
    for r in rows:
        if r["status"] != "done":
            error = (r["error"] or "").strip().splitlines()
            last = error[-1][:160].replace("|", "/") if error else ""
            out.append((r["key"], r["status"], str(r["attempts"]), last))
    return out


def write_bench_report(store: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` (plots under ``plots/``) and ``report.html`` for the done
    cells of ``store``, and ``cells.jsonl``, every cell as :meth:`Store.export` writes it
    (what ``Store.import_cells`` reads back to extend the grid elsewhere)."""
    db = Store(store)
    rows = db.rows("done")
    if not rows:
        raise ValueError(f"{store} holds no finished cell; run the grid first")
    db.export(Path(out) / "cells.jsonl")
    table = aggregate(rows)
    out = Path(out)
    tasks = sorted({r["task"] for r in rows})
    md = ["# Benchmark report", "",
          "Compression ratio: the control's params over the nonzero params; theoretical "
          "speedup: the control's MACs over the nonzero MACs (Blalock et al. 2020). "
          "Accuracy is top-1 on each task's test split, mean ± std over seeds. CPU latency: "
          "the float model on this machine's CPU (not timed for int8 models); C "
          "instructions: per inference of the exported int8 C (only where a method exports "
          "C), counted on the emulated core where the grid's target is a Cortex-M and its "
          "toolchain is installed, else by callgrind on the host; wall: the cell's run "
          "time.", ""]  # fmt: skip
    body = [f"<h1>Benchmark report</h1><p>{html.escape(md[2])}</p>"]
    for task in tasks:
        png = _pareto_plot(task, table)
        plot = f"plots/{safe_name(task)}.png"
        write_atomic(inside(out, out / plot), png)
        board = _leaderboard(task, table)
        md += [f"## {task}", "", f"![{task}]({plot})", "",
               "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
        md += ["| " + " | ".join(r) + " |" for r in board] + [""]
        body.append(f"<h2>{html.escape(task)}</h2><img alt='{html.escape(task)}' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                    + _html_table(HEADER, board))  # fmt: skip
    missing = _missing(db.rows())
    if missing:
        md += ["## Cells missing from this report", "",
               "These cells are not done, so no table or plot above counts them.", "",
               "| " + " | ".join(MISSING_HEADER) + " |", "|---" * 4 + "|"]  # fmt: skip
        md += ["| " + " | ".join(r) + " |" for r in missing] + [""]
        body.append(
            "<h2>Cells missing from this report</h2>" + _html_table(MISSING_HEADER, missing)
        )
    write_atomic(out / "report.md", "\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-"
             "collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:"
             "100%}")  # fmt: skip
    write_atomic(out / "report.html", "<!DOCTYPE html><html lang='en'><head><meta "
                 f"charset='utf-8'><title>Benchmark report</title><style>{style}</style>"
                 "</head><body>" + "".join(body) + "</body></html>\n")  # fmt: skip
    return out / "report.md", out / "report.html"

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
    """{(task, model, method, keep): summary} of the cells' ``rows`` over seeds, with
    compression ratio and
    theoretical speedup against that task and model's control (same seed)."""
    control = {
        (r["task"], r["model"], r["seed"]): r["metrics"] for r in rows if r["method"] == CONTROL
    }
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
        for name in (
            "accuracy",
            "compression",
            "speedup",
            "macs",
            "flash_bytes",
            "peak_sram_bytes",
            "nonzero_params",
            "wall_s",
        ):
            summary[name], summary[f"{name}_std"] = _mean_std([m[name] for m in ms])
        # CPU latency is timed on float models only; instructions where C was counted
        for name in ("latency_ms", "instructions", "target_latency_ms"):
            if all(m.get(name) is not None for m in ms):
                summary[name], summary[f"{name}_std"] = _mean_std([m[name] for m in ms])
        out[key] = summary
    return out


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points (cost, accuracy, label) no other point beats: none cheaper or as cheap
    with a higher accuracy. Sorted by cost."""
    front, best = [], float("-inf")
    for cost, acc, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc, label))
            best = acc
    return front


def _styles(methods: list[str]) -> dict[str, tuple]:
    """A colour and marker per method, no two methods alike (40 colours, 8 markers)."""
    colours = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors]
    markers = "os^Dv<>P"
    return {
        m: (
            colours[i % len(colours)],
            markers[i // len(colours) % len(markers)]
            if len(methods) > len(colours)
            else markers[i % len(markers)],
        )
        for i, m in enumerate(methods)
    }


def _pareto_plot(task: str, table: dict) -> bytes:
    """Accuracy against MACs, flash and SRAM, one line per method (mean over seeds), the
    Pareto front over every method drawn and its methods named, the legend below."""
    from matplotlib.ticker import EngFormatter

    series: dict[tuple, list] = defaultdict(list)
    for (t, model, method, keep), s in table.items():
        if t == task:
            series[(model, method)].append((keep, s))
    names = sorted({f"{model} {method}" for model, method in series if method != CONTROL})
    style = _styles(names)
    models = sorted({model for model, _ in series})
    stars = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharey=True)
    for ax, (metric, label) in zip(axes, AXES):
        everything = []
        for (model, method), points in sorted(series.items()):
            points.sort(key=lambda p: -p[0])
            xs = [s[metric] for _, s in points]
            ys = [100 * s["accuracy"] for _, s in points]
            name = f"{model} {method}"
            everything += [
                (x, y, name if method != CONTROL else f"{model} unpruned") for x, y in zip(xs, ys)
            ]
            if method == CONTROL:  # a star per model, in that model's colour where several
                colour = "black" if len(models) == 1 else stars[models.index(model) % 10]
                ax.plot(
                    xs,
                    ys,
                    "*",
                    color=colour,
                    mec="black",
                    markersize=13,
                    label=f"{model} unpruned",
                    zorder=5,
                )
            else:
                colour, marker = style[name]
                ax.plot(xs, ys, marker=marker, color=colour, lw=1, ms=4.5, alpha=0.75, label=name)
        front = pareto_front(everything)
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="black",
            lw=2.2,
            ls="--",
            alpha=0.8,
            zorder=4,
            label="Pareto front" if ax is axes[0] else None,
        )
        shown = None
        for i, (x, y, name) in enumerate(front):  # the methods on the front, each run named once
            if name != shown:
                short = name if len(models) > 1 else name.split(" ", 1)[-1]
                ax.annotate(
                    short,
                    (x, y),
                    xytext=(4, -10 - 9 * (i % 2)),
                    textcoords="offset points",
                    fontsize=7.5,
                    zorder=6,
                )
            shown = name
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(6, max(1, len(labels))),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"{task}: accuracy against cost (mean over seeds; dashed: the Pareto "
        "front over every method, named)"
    )
    fig.tight_layout()
    return _png(fig)


def mean_ranks(rows: list[dict], resamples: int = 2000, seed: int = 0) -> dict[str, list]:
    """Per task and over all tasks ("all"): each method's mean rank among the methods done
    at every model, operating point and seed of that task (1 is best, ties share places),
    with a 95% interval from resampling the seeds (the percentile bootstrap), and a tier:
    methods whose intervals overlap the tier's first are tied with it. With one seed
    there is no interval (NaN) and no tier (0). Rows of ``(method, mean, low, high,
    tier)``, best first."""
    import numpy as np
    from scipy.stats import rankdata

    acc: dict = defaultdict(dict)  # task -> ((model, keep), seed) -> {method: accuracy}
    for r in rows:
        if r["method"] != CONTROL and r.get("metrics"):
            point = ((r["model"], r["keep"]), r["seed"])
            acc[r["task"]].setdefault(point, {})[r["method"]] = r["metrics"]["accuracy"]
    rng = np.random.default_rng(seed)
    per_task, samples, single = {}, {}, set()
    for task, cells in acc.items():
        seeds = sorted({s for _, s in cells})
        points = sorted({p for p, _ in cells})  # (model, operating point)
        methods = sorted(set.intersection(*(set(c) for c in cells.values())))
        if len(methods) < 2 or any((p, s) not in cells for p in points for s in seeds):
            continue
        ranks = np.empty((len(seeds), len(points), len(methods)))
        for i, s in enumerate(seeds):
            for j, p in enumerate(points):
                ranks[i, j] = rankdata([-cells[(p, s)][m] for m in methods], method="average")
        draws = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
        boot = ranks[draws].mean(axis=(1, 2))  # (resamples, methods)
        samples[task] = (methods, ranks.mean(axis=(0, 1)), boot)
        if len(seeds) < 2:
            single.add(task)
    common = sorted(set.intersection(*(set(m) for m, _, _ in samples.values()))) if samples else []
    if len(samples) > 1 and len(common) > 1:
        idx = {t: [m.index(c) for c in common] for t, (m, _, _) in samples.items()}
        mean = np.mean([samples[t][1][idx[t]] for t in samples], axis=0)
        boot = np.mean([samples[t][2][:, idx[t]] for t in samples], axis=0)
        samples["all"] = (common, mean, boot)
    for task, (methods, mean, boot) in samples.items():
        low, high = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
        if task in single or (task == "all" and single):  # one seed: no interval, no tiers
            low, high = np.full_like(mean, np.nan), np.full_like(mean, np.nan)
        order = np.argsort(mean, kind="stable")
        rows_out, tier, head_high = [], 0, None
        for i in order:
            if np.isnan(low[i]):
                tier = 0
            elif head_high is None or low[i] > head_high:
                tier, head_high = tier + 1, high[i]
            rows_out.append((methods[i], float(mean[i]), float(low[i]), float(high[i]), tier))
        per_task[task] = rows_out
    return per_task


def _rank_table(ranks: dict[str, list]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The mean-rank table: over all tasks first (where there are several), then each."""
    tasks = [t for t in ranks if t != "all"]
    lead = "all" if "all" in ranks else tasks[0]
    per = {t: {m: (mean, lo, hi) for m, mean, lo, hi, _ in ranks[t]} for t in ranks}
    header = (
        "method",
        f"mean rank ({'all tasks' if lead == 'all' else lead}), 95% interval",
        "tier",
        *(f"{t}" for t in tasks if t != lead),
    )
    out = []

    def cell(mean, lo, hi):
        return f"{mean:.1f}" + (" (one seed)" if lo != lo else f" [{lo:.1f}, {hi:.1f}]")

    for m, mean, lo, hi, tier in ranks[lead]:
        cells = [cell(*per[t][m]) if m in per[t] else "-" for t in tasks if t != lead]
        out.append((m, cell(mean, lo, hi), str(tier) if tier else "-", *cells))
    return header, out


def _leaderboard(task: str, table: dict) -> list[tuple[str, ...]]:
    rows = []
    entries = [(k, s) for k, s in table.items() if k[0] == task]
    entries.sort(key=lambda e: (e[0][1], -e[0][3], -e[1]["accuracy"]))
    for (_, model, method, keep), s in entries:
        rows.append(
            (
                model,
                f"{keep:g}",
                method,
                f"{100 * s['accuracy']:.1f} ± {100 * s['accuracy_std']:.1f}",
                f"{s['compression']:.2f}x",
                f"{s['speedup']:.2f}x",
                f"{s['flash_bytes']:,.0f}",
                f"{s['peak_sram_bytes']:,.0f}",
                f"{s['latency_ms']:.3f}" if "latency_ms" in s else "-",
                f"{s['instructions']:,.0f}" if "instructions" in s else "-",
                f"{s['wall_s']:.0f}",
                str(s["seeds"]),
            )
        )
    return rows


HEADER = (
    "model",
    "keep",
    "method",
    "accuracy (%)",
    "compression",
    "speedup",
    "flash (B)",
    "peak SRAM (B)",
    "CPU latency (ms)",
    "C instructions",
    "wall (s)",
    "seeds",
)


MISSING_HEADER = ("cell", "status", "attempts", "last error")


def _html_table(header, rows) -> str:
    """A table of text cells, escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows
    )
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
    """Write ``report.md`` (plots under ``plots/``) and ``report.html`` into ``out`` for the
    done
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
    md = [
        "# Benchmark report",
        "",
        "Compression ratio: the control's params over the nonzero params; theoretical "
        "speedup: the control's MACs over the nonzero MACs (Blalock et al. 2020). "
        "Accuracy is top-1 on each task's test split, mean ± std over seeds. CPU latency: "
        "the float model on this machine's CPU (not timed for int8 models); C "
        "instructions: per inference of the exported int8 C (only where a method exports "
        "C), counted on the emulated core where the grid's target is a Cortex-M and its "
        "toolchain is installed, else by callgrind on the host; wall: the cell's run "
        "time.",
        "",
    ]
    body = [f"<h1>Benchmark report</h1><p>{html.escape(md[2])}</p>"]
    ranks = mean_ranks(rows)
    if ranks:
        header, rank_rows = _rank_table(ranks)
        intro = (
            "Mean rank of each method over the operating points and seeds of each task "
            "(1 is best; methods tied on accuracy share their places), with a 95% "
            "interval from resampling the seeds; a tier holds the methods whose "
            "intervals overlap its first method's, which this grid cannot tell apart."
        )
        md += [
            "## Mean rank",
            "",
            intro,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        md += ["| " + " | ".join(r) + " |" for r in rank_rows] + [""]
        body.append(
            f"<h2>Mean rank</h2><p>{html.escape(intro)}</p>" + _html_table(header, rank_rows)
        )
    for task in tasks:
        png = _pareto_plot(task, table)
        plot = f"plots/{safe_name(task)}.png"
        write_atomic(inside(out, out / plot), png)
        board = _leaderboard(task, table)
        md += [
            f"## {task}",
            "",
            f"![{task}]({plot})",
            "",
            "| " + " | ".join(HEADER) + " |",
            "|" + "---|" * len(HEADER),
        ]
        md += ["| " + " | ".join(r) + " |" for r in board] + [""]
        body.append(
            f"<h2>{html.escape(task)}</h2><img alt='{html.escape(task)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            + _html_table(HEADER, board)
        )
    missing = _missing(db.rows())
    if missing:
        md += [
            "## Cells missing from this report",
            "",
            "These cells are not done, so no table or plot above counts them.",
            "",
            "| " + " | ".join(MISSING_HEADER) + " |",
            "|---" * 4 + "|",
        ]
        md += ["| " + " | ".join(r) + " |" for r in missing] + [""]
        body.append(
            "<h2>Cells missing from this report</h2>" + _html_table(MISSING_HEADER, missing)
        )
    write_atomic(out / "report.md", "\n".join(md))
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-"
        "collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:"
        "100%}"
    )
    write_atomic(
        out / "report.html",
        "<!DOCTYPE html><html lang='en'><head><meta "
        f"charset='utf-8'><title>Benchmark report</title><style>{style}</style>"
        "</head><body>" + "".join(body) + "</body></html>\n",
    )
    return out / "report.md", out / "report.html"

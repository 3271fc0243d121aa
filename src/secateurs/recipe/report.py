"""The run report: a table per stage and plots, as Markdown (with PNG files beside it) and
as one self-contained HTML file (the plots embedded as data URIs).

Every figure comes from the run's metrics records, which ``sc.measure`` measured.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .._io import write_atomic
from ..measure.target import Target

COLUMNS = (
    "stage",
    "kind",
    "accuracy",
    "params",
    "nonzero params",
    "MACs",
    "flash",
    "peak SRAM",
    "latency",
    "time",
)


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def stage_rows(records: list[dict]) -> list[tuple[str, ...]]:
    """One row of text per stage of ``records``, in the order of :data:`COLUMNS`."""
    rows: list[tuple[str, ...]] = []
    for r in records:
        p = r["profile"]
        latency = p.get("latency_ms")
        rows.append(
            (
                r["name"],
                r["kind"],
                f"{r['accuracy']:.2%}",
                f"{p['params']:,}",
                f"{p['nonzero_params']:,}",
                f"{p['macs']:,}",
                _kib(r["flash_bytes"]),
                _kib(p["peak_sram_bytes"]),
                "-" if latency is None else f"{latency:.3f} ms",
                f"{r['wall_s']:.1f} s",
            )
        )
    return rows


def _conv_channels(record: dict) -> dict[str, int]:
    """Output channels of each layer with weights, by module path."""
    out: dict[str, int] = {}
    for layer in record["profile"]["layers"]:
        if layer["weights"] and layer["macs"] and len(layer["output_shape"]) >= 2:
            out.setdefault(layer["module"] or "(top)", layer["output_shape"][1])
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _tradeoff(records: list[dict]) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    acc = [100 * r["accuracy"] for r in records]
    for ax, values, label in (
        (axes[0], [r["profile"]["macs"] / 1e3 for r in records], "thousand MACs per inference"),
        (axes[1], [r["flash_bytes"] / 1024 for r in records], "flash (KiB)"),
    ):
        ax.plot(values, acc, "o-", color="tab:blue")
        for v, a, r in zip(values, acc, records):
            ax.annotate(r["name"], (v, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("accuracy against cost, stage by stage")
    return _png(fig)


def _channels(records: list[dict]) -> bytes:
    before, after = _conv_channels(records[0]), _conv_channels(records[-1])
    names = list(before)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 3.8))
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs], [before[n] for n in names], 0.4, label=f"after {records[0]['name']}"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [after.get(n, 0) for n in names],
        0.4,
        label=f"after {records[-1]['name']}",
    )
    ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.legend()
    ax.set_title("channels per layer, first and last stage")
    return _png(fig)


def _sparsity(record: dict) -> bytes:
    weights = record["profile"]["weights"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(weights) + 2), 3.8))
    values = [100 * (1 - w["nonzero"] / w["numel"]) if w["numel"] else 0 for w in weights]
    ax.bar(range(len(weights)), values, color="tab:orange")
    ax.set_xticks(range(len(weights)), [w["name"] for w in weights], rotation=90, fontsize=7)
    ax.set_ylabel("zero weights (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"sparsity per layer after {record['name']}")
    return _png(fig)


def _sram(record: dict, target: Target) -> bytes:
    layers = [x for x in record["profile"]["layers"] if x["output_bytes"] or x["macs"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 2), 3.8))
    ax.bar(range(len(layers)), [x["live_bytes"] / 1024 for x in layers], color="tab:green")
    ax.axhline(
        target.sram_bytes / 1024,
        color="tab:red",
        linestyle="--",
        label=f"{target.name} SRAM ({_kib(target.sram_bytes)})",
    )
    ax.set_yscale("log")
    ax.set_xticks(
        range(len(layers)), [f"{x['module']} {x['op']}" for x in layers], rotation=90, fontsize=6
    )
    ax.set_ylabel("live activations (KiB)")
    ax.legend()
    ax.set_title(f"SRAM per layer after {record['name']}")
    return _png(fig)


def _details(records: list[dict]) -> list[str]:
    lines = []
    for r in records:
        shown = {k: v for k, v in r["details"].items() if not isinstance(v, (list, dict))}
        if shown:
            text = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
            )
            lines.append(f"{r['name']}: {text}")
    return lines


def write_report(out: Path, recipe, records: list[dict], target: Target) -> tuple[Path, Path]:
    """Write ``report.md`` (plots under ``plots/``) and a self-contained ``report.html`` into
    ``out``, for the run of ``recipe`` whose stages left ``records``, drawn against
    ``target``'s SRAM."""
    if not records:
        raise ValueError("a report needs at least one finished stage")
    plots = {
        "tradeoff": ("Accuracy against MACs and flash", _tradeoff(records)),
        "channels": ("Channels per layer", _channels(records)),
        "sparsity": ("Sparsity per layer", _sparsity(records[-1])),
        "sram": (f"SRAM per layer against the {target.name} limit", _sram(records[-1], target)),
    }
    for key, (_, png) in plots.items():
        write_atomic(out / "plots" / f"{key}.png", png)
    m = recipe.model
    title = f"secateurs run: {m.name or m.import_ or m.checkpoint} on {recipe.task}"
    rows = stage_rows(records)
    details = _details(records)
    intro = recipe.description.strip()
    note = (
        "Accuracy is top-1 on the test split. Costs come from sc.measure on a batch of "
        "one: float32 until a quantize stage, then the int8 model's stored bytes as "
        "flash and 8-bit activations for SRAM."
    )

    md = [f"# {title}", ""]
    if intro:
        md += [intro, ""]
    md += [note, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    if details:
        md += ["", "## Stage details", ""] + [f"- {line}" for line in details]
    for key, (caption, _) in plots.items():
        md += ["", f"## {caption}", "", f"![{caption}](plots/{key}.png)"]
    write_atomic(out / "report.md", "\n".join(md) + "\n")

    esc = html.escape
    table = (
        "<tr>"
        + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
        + "</tr>\n"
        + "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>\n" for row in rows)
    )
    body = [f"<h1>{esc(title)}</h1>"]
    if intro:
        body.append(f"<p>{esc(intro)}</p>")
    body += [f"<p>{esc(note)}</p>", f"<table>\n{table}</table>"]
    if details:
        body.append(
            "<h2>Stage details</h2><ul>" + "".join(f"<li>{esc(d)}</li>" for d in details) + "</ul>"
        )
    for caption, png in plots.values():
        data = base64.b64encode(png).decode()
        body.append(
            f'<h2>{esc(caption)}</h2><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}img{max-width:100%}"
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    write_atomic(out / "report.html", page)
    return out / "report.md", out / "report.html"

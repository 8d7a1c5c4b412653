"""`bebert report --plot FILE.png`: the main metric against weights size (log scale), one point per model.

matplotlib is imported lazily (Agg, no display, no pyplot global state); the PNG carries the
number of points in a `bebert-points` text chunk so tools (and tests) can check it without
image analysis.
"""

from __future__ import annotations

import os
from pathlib import Path

from bebert_cli.errors import ModelError, UsageError

POINTS_KEY = "bebert-points"


def _points(report: dict) -> tuple[list[dict], str, str]:
    """(points, task, metric): every model (and the baseline) with a saved metric for the report's task."""
    everyone = list(report["models"]) + ([report["baseline"]] if report.get("baseline") else [])
    with_metrics = [e for e in everyone if e.get("metrics")]
    if not with_metrics:
        raise ModelError("--plot: none of the models has a saved evaluation (eval_results.json) to plot")
    ref = (report.get("baseline") or {}).get("metrics") or with_metrics[0]["metrics"]
    task, metric = report.get("task") or ref["task"], ref["main_metric"]
    pts = []
    for e in with_metrics:
        m = e["metrics"]
        if (m["task"], m["main_metric"]) == (task, metric):
            pts.append({"name": e["name"], "bytes": e["bytes"]["weights"], "value": m["main_value"] * 100.0,
                        "baseline": e is report.get("baseline"), "bits": e["bits"]})
    return pts, task, metric


def write_plot(report: dict, path) -> dict:
    """Draw the trade-off plot to `path` (PNG, written atomically); returns {"path", "points", "skipped"}."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot writes a PNG; give a file name ending in .png, not {path.name!r}")
    if not path.parent.is_dir():
        raise UsageError(f"--plot: directory {path.parent} does not exist")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'bebert[plot]' (or pip install matplotlib)") from None

    pts, task, metric = _points(report)
    everyone = len(report["models"]) + (1 if report.get("baseline") else 0)
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = [p for p in pts if not p["baseline"]]
    base = [p for p in pts if p["baseline"]]
    if models:
        ax.scatter([p["bytes"] / 1e6 for p in models], [p["value"] for p in models], s=40, color="tab:blue", label="models",
                   zorder=3)
    if base:
        ax.scatter([p["bytes"] / 1e6 for p in base], [p["value"] for p in base], s=120, marker="*", color="tab:red",
                   label="baseline", zorder=3)
    for p in pts:
        ax.annotate(f"{p['name']} ({p['bits']})", (p["bytes"] / 1e6, p["value"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.15)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("weights size (MB, log scale)")
    ax.set_ylabel(f"{task} {metric} (%)")
    ax.set_title(f"{task}: {metric} vs size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", metadata={POINTS_KEY: str(len(pts)), "Title": f"bebert report: {task} {metric} vs size"})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "points": len(pts), "skipped": everyone - len(pts), "task": task, "metric": metric}


def png_text_chunks(path) -> dict[str, str]:
    """The tEXt chunks of a PNG file (checks the signature); for tests and tools."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    out, i = {}, 8
    while i + 8 <= len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0]:
            raise ValueError(f"{path}: corrupt PNG chunk {kind!r}")
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        i += 12 + n
    return out

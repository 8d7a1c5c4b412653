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
    _require_matplotlib()

    pts, task, metric = _points(report)
    everyone = len(report["models"]) + (1 if report.get("baseline") else 0)
    fig, _, _ = draw_tradeoff(pts, task, metric)

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", metadata={POINTS_KEY: str(len(pts)), "Title": f"bebert report: {task} {metric} vs size"})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "points": len(pts), "skipped": everyone - len(pts), "task": task, "metric": metric}


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'bebert[plot]' (or pip install matplotlib)") from None


# Where a label may go around its point, in the order tried: (dx, dy) direction and the text alignment
# that keeps the label on that side of the point.
_SIDES = ((1, 0, "left", "center"), (-1, 0, "right", "center"), (1, 1, "left", "bottom"), (1, -1, "left", "top"),
          (-1, 1, "right", "bottom"), (-1, -1, "right", "top"), (0, 1, "center", "bottom"), (0, -1, "center", "top"))
_GAPS = (3, 10, 20, 32, 46, 62)  # points between marker and label; from the second on, a thin leader line
_PAD = 3  # pixels kept free between labels, markers and the axes' edge
_MARKER_RADIUS = {False: 3.5, True: 6.0}  # points: the models' dots (s=40) and the baseline's star (s=120)


def draw_tradeoff(pts: list[dict], task: str, metric: str):
    """(figure, axes, label annotations) of the metric-vs-size plot, its layout final.

    Every label sits inside the axes and overlaps no other label, no marker and no legend: each is
    tried around its point, nearest first (`_SIDES` x `_GAPS`); when some do not fit, the axes grow
    their margins and all are placed again; a label that still fits nowhere goes into the legend
    instead, so the picture stays readable however the points crowd."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for is_base, style in ((False, {"s": 40, "color": "tab:blue", "label": "models"}),
                           (True, {"s": 120, "marker": "*", "color": "tab:red", "label": "baseline"})):
        group = [p for p in pts if p["baseline"] == is_base]
        if group:
            handles.append(ax.scatter([p["bytes"] / 1e6 for p in group], [p["value"] for p in group], zorder=3, **style))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("weights size (MB, log scale)")
    ax.set_ylabel(f"{task} {metric} (%)")
    ax.set_title(f"{task}: {metric} vs size")
    ax.grid(True, which="both", alpha=0.3)

    probes = {id(p): ax.annotate(_label(p), _xy(p), textcoords="offset points", xytext=(0, 0), fontsize=8, in_layout=False)
              for p in pts}
    in_legend: list[dict] = []  # labels that fit nowhere in the axes
    margin = 0.12
    while True:  # each round places every label, or widens the margins, or moves one label to the legend
        ax.margins(x=margin, y=margin)
        ax.autoscale_view()
        for legend in fig.legends:
            legend.remove()
        extra = [Line2D([], [], linestyle="none", label=f"{_label(p)}: {p['bytes'] / 1e6:.3g} MB, {p['value']:.2f}")
                 for p in in_legend]
        ncols = 2 if extra else len(handles)  # a moved label's entry is long: two a row fit the width
        fig.set_figheight(4.5 + 0.17 * max(0, -(-(len(handles) + len(extra)) // ncols) - 1))  # room for its rows
        fig.legend(handles=handles + extra, loc="outside lower center", ncols=ncols, fontsize=8)
        fig.draw_without_rendering()  # the final layout: axes position and data limits
        placed = [p for p in pts if all(p is not q for q in in_legend)]
        spots, failed = _place(ax, placed, probes, fig.canvas.get_renderer())
        if not failed:
            break
        if margin < 0.5:
            margin = min(0.5, margin * 1.6)
        else:
            in_legend.append(failed[0])
    fig.set_layout_engine("none")  # freeze the layout the labels were placed in
    for probe in probes.values():
        probe.remove()
    labels = []
    for p in placed:
        offset, ha, va, leader = spots[id(p)]
        arrow = {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 4} if leader else None
        labels.append(ax.annotate(_label(p), _xy(p), textcoords="offset points", xytext=offset, ha=ha, va=va, fontsize=8,
                                  arrowprops=arrow, zorder=4))
    return fig, ax, labels


def _label(p: dict) -> str:
    return f"{p['name']} ({p['bits']})"


def _xy(p: dict) -> tuple[float, float]:
    return p["bytes"] / 1e6, p["value"]


def _place(ax, pts: list[dict], probes: dict, renderer):
    """({id(point): (offset, ha, va, leader line?)}, points whose labels fit nowhere): each label at the
    first free spot around its point, the highest points first."""
    from matplotlib.text import Text

    frame = ax.get_window_extent(renderer).padded(-_PAD)
    taken = [_marker_box(ax, p) for p in pts]
    texts, leaders = [], []  # placed label boxes, and the leader lines drawn so far
    spots, failed = {}, []
    for p in sorted(pts, key=lambda q: -q["value"]):
        probe, radius = probes[id(p)], _MARKER_RADIUS[p["baseline"]]
        anchor = tuple(ax.transData.transform(_xy(p)))
        spot = None
        for gap in _GAPS:
            for dx, dy, ha, va in _SIDES:
                d = radius + gap
                offset = (dx * d, dy * d)
                probe.set_position(offset)
                probe.set_ha(ha)
                probe.set_va(va)
                probe.update_positions(renderer)
                box = Text.get_window_extent(probe, renderer)  # the text alone, without a leader line
                padded = box.padded(_PAD)
                if not _inside(box, frame) or any(padded.overlaps(t) for t in taken + texts):
                    continue
                leader = (anchor, _leader_end(box, anchor)) if gap != _GAPS[0] else None
                if any(_crosses(seg, padded) for seg in leaders) or (
                        leader and any(_crosses(leader, t) for t in texts)):
                    continue  # no leader line through another label
                spot = (offset, ha, va, leader is not None)
                break
            if spot is not None:
                break
        if spot is None:
            failed.append(p)
        else:
            spots[id(p)] = spot
            texts.append(box)
            if spot[3]:
                leaders.append(leader)
    return spots, failed


def _marker_box(ax, p: dict):
    """The display-space box a point's marker covers."""
    from matplotlib.transforms import Bbox

    x, y = ax.transData.transform(_xy(p))
    r = _MARKER_RADIUS[p["baseline"]] * ax.figure.dpi / 72
    return Bbox.from_extents(x - r, y - r, x + r, y + r)


def _leader_end(box, point) -> tuple[float, float]:
    """Where matplotlib starts an annotation's arrow: the corner or edge middle of the text box nearest the point."""
    x = min((box.x0, (box.x0 + box.x1) / 2, box.x1), key=lambda v: abs(v - point[0]))
    y = min((box.y0, (box.y0 + box.y1) / 2, box.y1), key=lambda v: abs(v - point[1]))
    return x, y


def _crosses(segment, box) -> bool:
    """Whether the segment ((x0, y0), (x1, y1)) passes through `box` (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = segment
    lo, hi = 0.0, 1.0
    for delta, start, low, high in ((x1 - x0, x0, box.x0, box.x1), (y1 - y0, y0, box.y0, box.y1)):
        if delta == 0:
            if not low <= start <= high:
                return False
            continue
        t0, t1 = sorted(((low - start) / delta, (high - start) / delta))
        lo, hi = max(lo, t0), min(hi, t1)
        if lo > hi:
            return False
    return True


def _inside(box, frame) -> bool:
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


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

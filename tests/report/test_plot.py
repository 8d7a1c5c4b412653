"""The trade-off plot's labels: inside the axes, clear of each other, of every marker and of the legend."""

import itertools

import pytest
from matplotlib.text import Text  # the `plot` extra, which the test environment installs

from bebert_cli.report.plot import _marker_box, draw_tradeoff, write_plot

# docs/results.md's SST-2 checkpoints: (name, weights bytes, dev accuracy %, bits, baseline); int8 is a
# dynamic-quantization-sized point, the three students at ~3.4 MB sit almost on top of each other.
REALISTIC = [("teacher-sst2", 90_867_952, 88.88, "fp32", True), ("int8-dynamic", 23_900_000, 88.3, "int8", False),
             ("bibert-full", 3_388_648, 79.59, "1-1-1", False), ("bit-full", 3_410_000, 79.82, "1-1-1", False),
             ("w1a4", 3_395_000, 83.14, "1-1-4", False), ("w1a8", 3_396_000, 85.21, "1-1-8", False),
             ("ens-full", 6_810_000, 83.26, "1-1-4 x2", False), ("hashbibert-full", 1_862_292, 59.75, "1-h-1", False)]


def _points(rows):
    return [{"name": n, "bytes": b, "value": v, "bits": bits, "baseline": base} for n, b, v, bits, base in rows]


def _check_layout(fig, ax, labels, pts):
    fig.draw_without_rendering()  # as savefig draws it (the layout is frozen: nothing moves)
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    boxes = [Text.get_window_extent(label, renderer) for label in labels]
    for label, box in zip(labels, boxes):
        name = label.get_text()
        assert frame.x0 < box.x0 and box.x1 < frame.x1 and frame.y0 < box.y0 and box.y1 < frame.y1, f"{name} touches the edge"
        for p in pts:
            assert not box.overlaps(_marker_box(ax, p)), f"{name} covers the marker of {p['name']}"
    for (a, box_a), (b, box_b) in itertools.combinations(zip(labels, boxes), 2):
        assert not box_a.overlaps(box_b), f"{a.get_text()} overlaps {b.get_text()}"
    legend = fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(frame) and 0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and legend.y0 >= 0


def test_realistic_points_get_clear_labels_inside_the_axes():
    pts = _points(REALISTIC)
    fig, ax, labels = draw_tradeoff(pts, "sst2", "accuracy")
    assert sorted(label.get_text() for label in labels) == sorted(f"{p['name']} ({p['bits']})" for p in pts)
    _check_layout(fig, ax, labels, pts)


def test_a_crowd_too_dense_to_label_moves_labels_to_the_legend():
    pts = _points([(f"student-{i}", 3_400_000 + 1000 * i, 80 + 0.05 * i, "1-1-1", False) for i in range(14)]
                  + [("teacher", 90_000_000, 88.9, "fp32", True)])
    fig, ax, labels = draw_tradeoff(pts, "sst2", "accuracy")
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    moved = [t for t in legend_texts if t not in ("models", "baseline")]
    assert moved and len(labels) + len(moved) == len(pts)  # every point named once, in the axes or the legend
    assert all(" MB, " in t for t in moved)
    _check_layout(fig, ax, labels, pts)


def test_write_plot_saves_the_layout_it_checked(tmp_path):
    pts = _points(REALISTIC)
    everyone = [{"name": p["name"], "bytes": {"weights": p["bytes"]}, "bits": p["bits"],
                 "metrics": {"task": "sst2", "main_metric": "accuracy", "main_value": p["value"] / 100}} for p in pts]
    report = {"models": everyone[1:], "baseline": everyone[0], "task": "sst2"}
    out = write_plot(report, tmp_path / "tradeoff.png")
    assert out["points"] == len(pts) and out["skipped"] == 0
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_layout_check_sees_an_overlap_and_a_label_off_the_axes():
    pts = _points(REALISTIC)
    fig, ax, labels = draw_tradeoff(pts, "sst2", "accuracy")
    a, b = labels[0], labels[1]
    b.xy, b.xyann = a.xy, a.xyann
    b.set_ha(a.get_ha())
    b.set_va(a.get_va())
    with pytest.raises(AssertionError, match="overlaps|covers"):
        _check_layout(fig, ax, labels, pts)
    fig, ax, labels = draw_tradeoff(pts, "sst2", "accuracy")
    labels[0].xyann = (400, 0)
    with pytest.raises(AssertionError, match="touches the edge"):
        _check_layout(fig, ax, labels, pts)

"""One report: what `bebert report` prints or writes, from counted checkpoints (`counting.py`) and
FLOPs (`flops.py`): summaries, comparisons against a baseline, tables and Markdown."""

from __future__ import annotations

from bebert_cli.report.counting import PRECISION_LABELS, PRECISIONS, Count, count_checkpoint
from bebert_cli.report.flops import CONVENTIONS, count_flops
from bebert_cli.schema import split_name


# ---------------------------------------------------------------------------------------------
# one model, and one model against a baseline
# ---------------------------------------------------------------------------------------------


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def saved_metrics(count: Count, task: str | None = None) -> tuple[dict | None, str | None]:
    """(metrics, note): the saved evaluation of `count` for `task` (any task if None), or None and why not."""
    er = count.eval_results
    if not er:
        return None, "no saved evaluation (eval_results.json)"
    saved = er.get("task")
    if task is not None and saved != task:
        return None, f"saved evaluation is for {saved or 'an unknown task'}, not {task}"
    splits = er.get("splits") if isinstance(er.get("splits"), dict) else {}
    clean = {}
    for name, r in splits.items():
        m = r.get("metrics") if isinstance(r, dict) else None
        if isinstance(m, dict):
            samples = r.get("samples")
            clean[name] = {"metrics": {k: float(v) for k, v in m.items() if _number(v)},
                           "samples": int(samples) if _number(samples) else None}
    main_metric, main_value = er.get("main_metric"), er.get("main_value")
    if not isinstance(main_metric, str) or not _number(main_value):
        return None, "eval_results.json has no main_metric / main_value"
    # An evaluation object as every command writes it (docs/json.md); files older than schema 2 said "dev".
    split = er.get("split") if isinstance(er.get("split"), str) else next(iter(clean), None)
    return {"task": saved, "main_metric": main_metric, "main_value": float(main_value),
            "split": None if split is None else split_name(split), "splits": clean}, None


def summarize(count: Count, seq_len: int, *, task: str | None = None, by_module: bool = False) -> dict:
    """The JSON-ready summary of one checkpoint (see docs/report.md for every field)."""
    flops = count_flops(count, seq_len)
    metrics, note = saved_metrics(count, task)
    entry = {
        "path": str(count.path),
        "name": count.name,
        "kind": count.kind,
        "model_type": count.model_type,
        "bits": count.bits_label,
        "recipe": count.recipe,
        "members": len(count.members) if count.kind == "ensemble" else None,
        "params": {**count.params, "total": count.total_params},
        "bytes": {"weights": count.weights_bytes, "disk": count.disk_bytes, "by_precision": dict(count.tensor_bytes)},
        "flops": flops.to_dict(),
        "metrics": metrics,
        "notes": [*count.notes, *([note] if note else [])],
    }
    if by_module:
        entry["modules"] = [m.to_dict() for m in count.modules]
    return entry


def compare(entry: dict, baseline: dict) -> dict:
    """Ratios (how many times smaller / cheaper) and the metric delta (points) against the baseline."""

    def ratio(a, b):
        return a / b if b else None

    m, b = entry.get("metrics"), baseline.get("metrics")
    delta, note = None, None
    if m and b:
        if (m["task"], m["main_metric"]) == (b["task"], b["main_metric"]):
            delta = (m["main_value"] - b["main_value"]) * 100.0
        else:
            note = f"no metric delta: {m['task']}/{m['main_metric']} vs baseline {b['task']}/{b['main_metric']}"
    return {
        "baseline": baseline["path"],
        "size_ratio": ratio(baseline["bytes"]["weights"], entry["bytes"]["weights"]),
        "disk_ratio": ratio(baseline["bytes"]["disk"], entry["bytes"]["disk"]),
        "flop_ratio": ratio(baseline["flops"]["flop_equivalent"], entry["flops"]["flop_equivalent"]),
        "params_ratio": ratio(baseline["params"]["total"], entry["params"]["total"]),
        "metric_delta_points": delta,
        "note": note,
    }


# ---------------------------------------------------------------------------------------------
# formatting, shared by the CLI tables, the markdown and the model card
# ---------------------------------------------------------------------------------------------


def fmt_count(n) -> str:
    """1234567 -> '1.23 M' (decimal prefixes)."""
    if n is None:
        return ""
    n = float(n)
    for div, unit in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}" if n == int(n) else f"{n:.2f}"


def fmt_bytes(n) -> str:
    if n is None:
        return ""
    n = float(n)
    for div, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(x) -> str:
    return "" if x is None else f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def fmt_metric(metrics: dict | None) -> str:
    if not metrics:
        return ""
    return f"{metrics['main_metric']} {metrics['main_value'] * 100:.2f}"


def fmt_delta(x) -> str:
    return "" if x is None else f"{x:+.2f} pt"


PARAM_COLUMNS = [*PRECISIONS, "scales"]


def param_columns(entries: list[dict]) -> list[str]:
    """The precision classes any of the entries has (fp32 always, so a table is never empty)."""
    return [k for k in PARAM_COLUMNS if k == "fp32" or any(e["params"][k] for e in entries)]


def tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """[(title, header, rows)]: size and compute, quality (and ratios vs the baseline), parameters by precision."""
    entries, baseline = report["models"], report.get("baseline")
    everyone = ([baseline] if baseline else []) + entries

    def label(e):
        return e["name"] + (" (baseline)" if e is baseline else "")

    size = [[label(e), e["bits"], fmt_bytes(e["bytes"]["weights"]), fmt_bytes(e["bytes"]["disk"]), fmt_count(e["flops"]["flops"]),
             fmt_count(e["flops"]["binary_ops"]), fmt_count(e["flops"]["flop_equivalent"])] for e in everyone]
    out = [(f"size and compute per sequence (L={report['seq_len']})",
            ["model", "bits", "weights", "disk", "FLOPs", "binary ops", "FLOP-eq"], size)]
    if baseline:
        quality = []
        for e in everyone:
            vs = e.get("vs_baseline") or {}
            quality.append([label(e), fmt_metric(e["metrics"]), *(["1x", "1x", "1x", ""] if e is baseline else [
                fmt_ratio(vs.get("size_ratio")), fmt_ratio(vs.get("disk_ratio")), fmt_ratio(vs.get("flop_ratio")),
                fmt_delta(vs.get("metric_delta_points"))])])
        out.append((f"against {baseline['name']} (x: times smaller / fewer)",
                    ["model", "metric", "weights x", "disk x", "FLOP-eq x", "delta"], quality))
    else:
        out.append(("quality", ["model", "metric"], [[label(e), fmt_metric(e["metrics"])] for e in everyone]))
    cols = param_columns(everyone)
    params = [[label(e), *[fmt_count(e["params"][c]) if e["params"][c] else "0" for c in cols], fmt_count(e["params"]["total"])]
              for e in everyone]
    out.append(("parameters by precision", ["model", *[PRECISION_LABELS[c] for c in cols], "total"], params))
    return out


def module_rows(entry: dict) -> tuple[list[str], list[list[str]]]:
    head = ["module", "kind", "precision", "params", "bytes", "reason"]
    return head, [[m["name"], m["kind"], m["precision"], fmt_count(m["params"]), fmt_bytes(m["bytes"]), m["reason"]]
                  for m in entry.get("modules", [])]


def convention_lines(seq_len: int) -> list[str]:
    return [
        f"FLOPs per sequence of L={seq_len} tokens: 2 per multiply-accumulate; binary ops: 2 per multiply-accumulate "
        "per activation bit (b-bit x b-bit attention products: b*b); FLOP-eq = FLOPs + binary ops / 64 (as the "
        "BiBERT/BinaryBERT papers count); lookups, LayerNorm, GELU, softmax not counted.",
        "Parameters: total excludes the fp16 per-row scales of 1-bit tensors; on-the-fly = hashed embeddings (0 bytes). "
        "weights = safetensors files; disk = every checkpoint file but README.md; MB = 10^6 B.",
    ]


def md_table(head: list[str], body: list[list[str]]) -> str:
    def esc(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    entries, baseline = report["models"], report.get("baseline")
    out = [f"### bebert report (L = {report['seq_len']})"]
    for title, head, body in tables(report):
        out += ["", f"**{title[0].upper() + title[1:]}**", "", md_table(head, body)]
    for e in ([baseline] if baseline else []) + entries:
        if "modules" in e:
            head, body = module_rows(e)
            out += ["", f"**Modules of `{e['name']}`**", "", md_table(head, body)]
    out += [""] + [f"_{line}_" for line in convention_lines(report["seq_len"])]
    notes = [f"{e['name']}: {n}" for e in ([baseline] if baseline else []) + entries for n in e["notes"]]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def build_report(paths, *, baseline=None, task: str | None = None, seq_len: int | None = None,
                 by_module: bool = False) -> dict:
    """The whole report as one JSON-ready dict (what `bebert report --json` prints)."""
    counts = [count_checkpoint(p) for p in paths]
    base_count = count_checkpoint(baseline) if baseline is not None else None
    if seq_len is None:
        seq_len = counts[0].default_seq_len() if counts else 128
    base = summarize(base_count, seq_len, task=task, by_module=by_module) if base_count else None
    entries = []
    for c in counts:
        e = summarize(c, seq_len, task=task, by_module=by_module)
        if base:
            e["vs_baseline"] = compare(e, base)
            if e["vs_baseline"]["note"]:
                e["notes"].append(e["vs_baseline"]["note"])
        entries.append(e)
    lengths = sorted({c.run_info["max_seq_length"] for c in counts + ([base_count] if base_count else [])
                      if "max_seq_length" in c.run_info and c.default_seq_len() == c.run_info["max_seq_length"]})
    return {  # `bebert report --json` adds schema and schema_version (bebert_cli/schema.py)
        "seq_len": seq_len,
        "task": task,
        "conventions": dict(CONVENTIONS),
        "models": entries,
        "baseline": base,
        "saved_seq_lens": lengths,
    }


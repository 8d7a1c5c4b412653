"""The Hugging Face model card (`README.md`) every bebert checkpoint carries.

    from bebert_cli.report.card import write_model_card
    write_model_card(out_dir)                      # after the checkpoint files are written
    write_model_card(tmp_dir, name=output.name)    # inside an atomic temp dir: name it after the output

YAML front matter: `library_name` (`bebert` for packed and ensemble checkpoints, which need bebert
to load; `transformers` for full-precision checkpoints and exports that plain transformers loads),
`pipeline_tag: text-classification`, the `license` and Hub `base_model` carried from the source
(`lineage`), `base_model_relation`, tags and a `model-index` with the saved, measured dev metrics as
fractions (exactly as in eval_results.json; none where nothing was measured). Then the recipe, the
sizes and FLOPs (counted from the files, see docs/report.md) and how to load the model, with the
calls that work for that kind of checkpoint. `bebert report PATH --write-card` regenerates it;
`bebert export` writes an export's own card (`export_format`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bebert_cli.errors import BebertError
from bebert_cli.report.summary import (
    CONVENTIONS, compare, count_checkpoint, fmt_bytes, fmt_count, fmt_delta, fmt_ratio, md_table, summarize,
)
from bebert_cli.format import CARD_FILE
from bebert_cli.report.counting import PRECISION_LABELS, PRECISIONS, Count
from bebert_cli.report.lineage import hub_id as _hub_id
from bebert_cli.report.lineage import lineage


def _metric_name(metric: str) -> str:
    return {"f1": "F1", "matthews_correlation": "Matthews correlation"}.get(metric, metric.replace("_", " ").capitalize())


def _teacher_ref(count: Count) -> str | None:
    ref = count.run_info.get("teacher") or count.run_info.get("base_model")
    if not ref and count.manifest:
        ref = count.manifest.get("teacher")
    return ref if isinstance(ref, str) and ref else None


def _baseline_summary(count: Count, baseline, seq_len: int) -> dict | None:
    """The baseline to compare with: a path, or "auto" = the teacher of a binary model if it exists locally."""
    if baseline is None:
        return None
    if baseline != "auto":
        return summarize(count_checkpoint(baseline), seq_len)  # an explicit baseline must be readable
    ref = _teacher_ref(count) if count.kind != "fp" else None
    if not ref or not Path(ref).expanduser().is_dir():
        return None
    try:
        return summarize(count_checkpoint(ref), seq_len)
    except BebertError:
        return None  # the teacher moved or changed since: the card is still written, without ratios


def _describe(count: Count, task_label: str) -> str:
    mt = count.model_type
    teacher = _teacher_ref(count)
    if count.kind == "ensemble":
        m = count.manifest or {}
        what = (f"An ensemble of {len(count.members)} binary `{mt}` classifiers ({count.bits_label}, "
                f"strategy `{m.get('strategy', '?')}`, combination `{m.get('combination', '?')}`)")
    elif count.kind == "packed":
        q = count.quantization or {}
        bits = q.get("bits") if isinstance(q.get("bits"), dict) else {}
        emb = bits.get("embeddings", "?")
        emb = "hashed (computed on the fly)" if emb == "hash" else f"{emb}-bit"
        what = (f"A binary `{mt}` classifier, bits {count.bits_label} (weights-embeddings-activations: "
                f"{bits.get('weights', '?')}-bit weights, {emb} embeddings, "
                f"{bits.get('activations', '?')}-bit activations), attention `{q.get('attention', '?')}`, "
                f"recipe `{count.recipe}`")
    else:
        what = f"A full-precision ({count.bits_label}) `{mt}` sequence classifier"
    text = f"{what} for {task_label}, made with bebert"
    if teacher:
        text += f" from {'teacher' if count.kind != 'fp' else 'base model'} `{teacher}`"
    return text + "."


def _results_section(count: Count, summary: dict) -> list[str]:
    m = summary["metrics"]
    if not m:
        return ["## Results", "", f"No saved evaluation ({'; '.join(summary['notes']) or 'eval_results.json missing'})."]
    # "teacher_eval": bebert_run.json before schema 2 (docs/json.md)
    teacher = next((v for v in (count.run_info.get("teacher_evaluation"), count.run_info.get("teacher_eval"))
                    if isinstance(v, dict)), {})
    t_splits = teacher.get("splits") if isinstance(teacher.get("splits"), dict) else {}
    head = ["split", "metric", "value"] + (["teacher"] if t_splits else [])
    body = []
    for split, r in m["splits"].items():
        for metric, value in r["metrics"].items():
            row = [split, metric, f"{value:.4f}"]
            if t_splits:
                tv = t_splits.get(split, {}).get("metrics", {}).get(metric) if isinstance(t_splits.get(split), dict) else None
                row.append(f"{tv:.4f}" if isinstance(tv, (int, float)) else "")
            body.append(row)
    first = next(iter(m["splits"].values()), {})
    samples = f", {first['samples']} examples" if first.get("samples") else ""
    from bebert_cli.tasks import TASKS

    where = f"GLUE {m['task']} dev set" if m["task"] in TASKS else f"`{m['task']}` validation data"
    return ["## Results", "", f"{where}{samples} (fractions; main metric `{m['main_metric']}`).", "",
            md_table(head, body)]


def _size_section(summary: dict, seq_len: int, base: dict | None) -> list[str]:
    p, b, f = summary["params"], summary["bytes"], summary["flops"]
    rows = [[PRECISION_LABELS[k], f"{p[k]:,}", fmt_bytes(b["by_precision"][k])] for k in (*PRECISIONS, "scales") if p[k]]
    rows.append(["total (without scales)", f"{p['total']:,}", ""])
    out = ["## Size and compute", "", md_table(["parameters", "count", "bytes"], rows), "",
           md_table(["", "value"], [
               ["weights (safetensors)", f"{fmt_bytes(b['weights'])} ({b['weights']:,} bytes)"],
               ["checkpoint on disk (without this card)", f"{fmt_bytes(b['disk'])} ({b['disk']:,} bytes)"],
               [f"FLOPs per sequence (L={seq_len})", fmt_count(f["flops"])],
               [f"binary ops per sequence (L={seq_len})", fmt_count(f["binary_ops"])],
               ["FLOP-equivalent (FLOPs + binary ops / 64)", fmt_count(f["flop_equivalent"])],
           ])]
    if base:
        vs = compare(summary, base)
        out += ["", f"Against `{base['path']}` ({base['bits']}, {fmt_bytes(base['bytes']['weights'])}): "
                f"{fmt_ratio(vs['size_ratio'])} smaller weights, {fmt_ratio(vs['flop_ratio'])} fewer FLOP-equivalents"
                + (f", {fmt_delta(vs['metric_delta_points'])} on the main metric" if vs["metric_delta_points"] is not None else "")
                + "."]
    out += ["", f"Counting conventions: {CONVENTIONS['flops']}; {CONVENTIONS['binary_ops']}; "
            f"not counted: {CONVENTIONS['not_counted']}."]
    return out


def _fp_section(count: Count) -> list[str]:
    kept: dict[str, list[str]] = {}
    kinds: dict[str, int] = {}
    for m in count.modules:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
        if m.kind in ("fp linear", "fp embedding", "LayerNorm", "fp"):
            kept.setdefault(m.reason, []).append(m.name)
    if count.kind == "fp":
        return []
    out = ["## What is binary, what is not", "", ", ".join(f"{n} {k} module(s)" for k, n in kinds.items()) + ".", ""]
    body = [[reason, str(len(names)), ", ".join(f"`{n}`" for n in names[:4]) + (", ..." if len(names) > 4 else "")]
            for reason, names in kept.items()]
    if body:
        out += ["Kept full precision:", "", md_table(["reason", "modules", "e.g."], body)]
    return out


def _recipe_section(count: Count) -> list[str]:
    if count.kind == "ensemble":
        m = {k: v for k, v in (count.manifest or {}).items() if not k.startswith("_")}
        return ["## Recipe", "", "Ensemble manifest (`ensemble.json`):", "", "```json", json.dumps(m, indent=2, sort_keys=True),
                "```"]
    q = count.quantization or {}
    recipe = q.get("recipe") if isinstance(q.get("recipe"), dict) else None
    run = {k: count.run_info[k] for k in ("command", "teacher", "base_model", "task", "data", "max_seq_length", "train_rows",
                                          "steps")
           if k in count.run_info}
    out = ["## Recipe", ""]
    if recipe:
        out += ["Resolved recipe (`recipe.json`, also in `config.json` `quantization_config`):", "", "```json",
                json.dumps(recipe, indent=2, sort_keys=True), "```", ""]
    if run:
        out += ["Run (`bebert_run.json`):", "", "```json", json.dumps(run, indent=2, sort_keys=True, default=str), "```"]
    return out if len(out) > 2 else []


def _lineage(count: Count) -> dict:
    """License and Hub base model: as recorded at training time, else followed from the teacher now."""
    recorded = count.run_info.get("lineage")
    if isinstance(recorded, dict):
        return {"license": recorded.get("license"), "base_model": _hub_id(recorded.get("base_model"))}
    ref = _teacher_ref(count)
    return lineage(ref) if ref else {"license": None, "base_model": None}


def _relation(count: Count, base: str | None) -> str | None:
    """base_model_relation: a fine-tune of its base (fp), a quantized form of it (binary, same architecture)."""
    if base is None:
        return None
    if count.kind == "fp":
        return "finetune"
    recipe = (count.quantization or {}).get("recipe") if count.kind == "packed" else None
    if isinstance(recipe, dict) and (recipe.get("student_layers") or recipe.get("student_width")):
        return None  # a smaller, randomly initialised student distilled from the teacher: not a quantization of it
    return "quantized"


def _how_to_load(count: Count, name: str, task: str | None, export_format: str | None) -> list[str]:
    from bebert_cli.tasks import TASKS

    # a checkpoint records its data spec: `bebert eval DIR` needs no --task (a GLUE name stays explicit)
    t = f" --task {task}" if task in TASKS else ""
    repo = "REPO_ID_OR_DIR"
    out = ["## How to load", ""]
    if export_format in ("remote-code", "dense"):
        out += ["With plain transformers (no bebert needed): the bundled `modeling_bebert.py` runs the binary model, "
                "so loading needs `trust_remote_code=True` (read the code first; it is short).", "",
                "```python", "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                f'repo = "{repo}"  # this Hub repository or a local copy of `{name}`',
                "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)",
                "model = AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True)",
                'print(model(**tokenizer("a gripping, funny film", return_tensors="pt")).logits)', "```"]
        if export_format == "dense":
            out += ["", "Without `trust_remote_code` the weights load as the original architecture with full-precision "
                    "activations: that is NOT this binary model and its predictions differ."]
        return out
    if count.kind == "fp":
        return out + ["A plain Hugging Face checkpoint: transformers loads it as is.", "",
                      "```python", "from transformers import pipeline", "",
                      f'classifier = pipeline("text-classification", model="{repo}")  # or a local copy of `{name}`',
                      'print(classifier("a gripping, funny film"))', "```", "",
                      "```bash", f"bebert eval {name}{t}", f"bebert binarize {name}{t} -o {name}-binary",
                      "```"]
    if count.kind == "packed":
        out += ["With bebert installed (`pip install bebert`), transformers loads it directly (bebert registers its "
                "quantizer with transformers); `bebert_cli.load_model` picks the runtime:", "",
                "```python", "import bebert_cli  # registers the packed format with transformers",
                "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                f'repo = "{repo}"  # this Hub repository or a local copy of `{name}`',
                "tokenizer = AutoTokenizer.from_pretrained(repo)",
                "model = AutoModelForSequenceClassification.from_pretrained(repo)", "",
                "# from a local directory (for a Hub repository: huggingface_hub.snapshot_download(repo)):",
                f'model = bebert_cli.load_model("{name}")                     # simulated runtime',
                f'model = bebert_cli.load_model("{name}", runtime="packed")   # XNOR/popcount kernels', "```", ""]
    else:  # ensemble: only bebert combines the members
        out += ["With bebert installed (`pip install bebert`), from a local copy of this directory "
                "(for a Hub repository: `huggingface_hub.snapshot_download(repo_id)`):", "",
                "```python", "import bebert_cli", "",
                f'model = bebert_cli.load_model("{name}")                     # simulated runtime',
                f'model = bebert_cli.load_model("{name}", runtime="packed")   # XNOR/popcount kernels', "```", ""]
    return out + ["```bash", f"bebert eval {name}{t}", f"bebert eval {name}{t} --runtime packed",
                  f'bebert predict {name} "a text to classify"', f"bebert report {name} --by-module", "```"]


def render_model_card(path, *, name: str | None = None, baseline="auto", seq_len: int | None = None,
                      export_format: str | None = None) -> str:
    """The card's text. `baseline`: "auto" (the teacher named in bebert_run.json if it exists locally), a
    checkpoint path, or None (no comparison). `export_format` ("remote-code" | "dense"): the card of a
    `bebert export` of the packed checkpoint `path` (same model, loaded by plain transformers)."""
    from huggingface_hub import EvalResult, ModelCardData

    from bebert_cli.tasks import TASKS

    count = count_checkpoint(path)
    name = name or count.name
    seq_len = seq_len or count.default_seq_len()
    summary = summarize(count, seq_len)
    task = count.task()
    glue = TASKS.get(task) if task else None
    task_label = f"GLUE {glue.glue_dir}" if glue else (task or "text classification")

    results = []
    m = summary["metrics"]
    if m and glue:
        for split, r in m["splits"].items():
            for metric, value in r["metrics"].items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    continue  # only what was measured
                results.append(EvalResult(
                    task_type="text-classification", task_name="Text Classification", dataset_type="nyu-mll/glue",
                    dataset_name=f"GLUE {glue.glue_dir}", dataset_config=glue.hub_config, dataset_split=split,
                    metric_type=metric, metric_value=round(value, 6), metric_name=_metric_name(metric)))
    tags = ["bebert", count.model_type, "text-classification"]
    if count.kind != "fp":
        tags += ["binary", "1-bit", "quantized", f"bits-{count.bits_label.split(' ')[0]}"]
    if count.recipe:
        tags += [r for r in count.recipe.split("+")]
    if count.kind == "ensemble":
        tags.append("ensemble")
    if glue:
        tags += ["glue", glue.name]
    if export_format:
        tags += ["custom_code", f"bebert-export-{export_format}"]
    lin = _lineage(count)
    base = _hub_id(_teacher_ref(count)) if count.kind != "fp" else None
    base = base or lin["base_model"]
    relation = _relation(count, base)
    needs_bebert = count.kind in ("packed", "ensemble") and not export_format
    data = ModelCardData(
        library_name="bebert" if needs_bebert else "transformers", pipeline_tag="text-classification",
        license=lin["license"], tags=list(dict.fromkeys(tags)), datasets=["nyu-mll/glue"] if glue else None,
        base_model=base, model_name=name if results else None, eval_results=results or None,
        **({"base_model_relation": relation} if relation else {}),
    )
    base = _baseline_summary(count, baseline, seq_len)
    body = [f"# {name}", "", _describe(count, task_label), ""]
    if export_format:
        body += [f"This is the `bebert export --format {export_format}` of that model: "
                 + ("the same packed `model.safetensors` with standalone modeling code"
                    if export_format == "remote-code" else "its binary weights stored densely as fp32 (no size benefit)")
                 + "; its logits were checked to equal bebert's exactly. Sizes below are the packed model's.", ""]
    body += _results_section(count, summary) + [""]
    body += _size_section(summary, seq_len, base) + [""]
    fp = _fp_section(count)
    body += fp + ([""] if fp else [])
    recipe = _recipe_section(count)
    body += recipe + ([""] if recipe else [])
    body += _how_to_load(count, name, task, export_format) + [""]
    body += ["_Generated by `bebert report --write-card` from the checkpoint files; regenerate it after changing them._"]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"


def write_model_card(path, *, name: str | None = None, baseline="auto", seq_len: int | None = None,
                     export_format: str | None = None, out_dir=None) -> Path:
    """(Re)write `README.md` of `path` (or of `out_dir`, e.g. an export of `path`) atomically; returns its path."""
    from bebert_cli.atomic import atomic_write_bytes

    path = Path(path)
    text = render_model_card(path, name=name, baseline=baseline, seq_len=seq_len, export_format=export_format)
    target = Path(out_dir or path) / CARD_FILE
    atomic_write_bytes(target, text.encode("utf-8"))
    return target

"""End-to-end benchmark: bebert's packed students on the bit kernels vs torch fp32 / int8 and ONNX Runtime.

    python benchmarks/bench_model.py [--repeats 10] [--backends all|LIST] [--json results.json] [--profile]

What is measured, in one process, on one machine, with a fixed thread count (default 2, set in
OMP_NUM_THREADS before torch is imported, and torch.set_num_threads):

* models: BERT-base shape (12 x 768, FFN 3072, vocab 30522) and MiniLM shape (6 x 384, FFN 1536),
  BertForSequenceClassification with random weights (speed does not depend on the values); `tiny`
  (2 x 64) exists for smoke tests only;
* inputs (`--inputs`, BATCHxSEQ, no padding): 8 x 128, and batch-1 latency at 1 x 128 and 1 x 32
  (a service classifying one short request at a time);
* rows per model and input:
  - `fp32 eager`: the fp32 model, `attn_implementation="eager"` (the "x fp32" reference);
  - `fp32 sdpa`: the fp32 model with torch's scaled-dot-product attention (transformers' default);
  - `int8 dynamic`: `torch.ao.quantization.quantize_dynamic(fp32 sdpa, {nn.Linear}, torch.qint8)`
    (the "x int8" reference);
  - `ORT fp32` / `ORT int8`: ONNX Runtime on the transformer-optimized graph, and that graph after
    `quantize_dynamic` (the "x ORT int8" reference); see `ort_baseline.py`. Needs the `bench` extra
    (`pip install -e '.[bench]'`); without it these rows are skipped with one printed line
    (`--no-ort` skips them on purpose). Their logits are checked against torch fp32 (export) and
    ORT fp32 (quantization) before timing; a failed check is printed and recorded;
  - once per kernel backend of `--backends`, labelled `[backend]`:
    - `packed 1-1-1`: `quantize_(recipe bibert)` -> `save_packed` -> `load_packed(runtime="packed")`,
      what a user gets (its BiBERT layers fused: bits from the QKV GEMM to the FFN output);
    - `packed 1-1-1 unfused`: the same checkpoint after `fused_layer.uninstall`: every binary
      linear and the Bi-Attention as separate kernels on float tensors;
    - `packed w1a4`, `packed w1a8`: the same pipeline with recipes w1a4 / w1a8 (binary weights,
      4- / 8-bit LSQ activations, softmax attention; their layers fused too, `quant/fused_lsq.py`);
    - `packed w1a4 unfused`: the w1a4 checkpoint after `fused_layer.uninstall` (each linear and the
      attention reached through transformers' modules);
    - `ensemble 2x w1a4`: an ensemble directory (`bebert_cli/ensemble/model.py`) of two packed w1a4
      members (different random weights), `load_ensemble(runtime="packed")`; the report also gives
      its cost relative to two w1a4 forwards;
  `--backends` takes `all` (every compiled backend of `kernels.available_backends()`, fastest first,
  not the pure-torch fallback) or a comma list of names (`torch` allowed when named); default: the
  backend in use (`BEBERT_KERNEL_BACKEND`, else the best). The backend is switched with
  `kernels.set_backend` around each packed row's forward, so every row of every backend is timed in
  the same interleaved loop;
* latency: `--warmup` forwards (default 10: with OMP_WAIT_POLICY=passive a packed model's first forwards
  of a size and backend measure one thread, the kernels' pool and every thread, `quant/serial.py`; the warm-up covers them, so the timed
  forwards are the model's settled ones), then `--repeats` (>= 10 for a result) timed forwards per row, the rows
  interleaved round-robin so that background load hits every row alike; median and best, in ms;
  "x fp32" / "x int8" / "x ORT int8" = the reference row's median / this row's median, same run;
* idle check: /proc/loadavg before and after, recorded; a warning if the 1-minute load is above
  0.5 (the numbers are then upper bounds, and the ratios noisier);
* peak resident memory (`--no-rss` skips it): each model loaded in a fresh subprocess (fp32 / int8
  from a saved fp32 checkpoint, packed students and the ensemble from their directories, ORT from its
  .onnx files) plus one 8 x 128 forward; the child's VmHWM (/proc/self/status;
  `resource.getrusage(RUSAGE_SELF).ru_maxrss` where there is no /proc: on Linux ru_maxrss is
  inherited through fork + exec from this big parent, so it is not usable here), also for a process
  that only imports the libraries (onnxruntime too, for the ORT rows);
* `--profile`: where the time of the (fused) packed 1-1-1, the w1a4 and the w1a8 model goes, on each
  backend (linear kernels: binary GEMMs / `lsq_linear`; attention kernels: Bi-Attention / the integer
  products of the softmax attention, or its LSQ quantizers for format-2 checkpoints; everything else:
  torch, e.g. softmax, GELU, LayerNorm, and the float attention products of format 2) by timers around the kernel calls, plus torch.profiler's top operators,
  and the Python overhead per kernel call (time in the `bebert_cli.kernels` wrappers minus the C
  extension's time under them; it dominates batch 1).

Prints one markdown table per model and input, and the memory table; `--json FILE` writes everything
measured (every timed run, the ORT build and sanity checks, the machine). `--workdir DIR` keeps the
generated checkpoints and ONNX files between runs (it does not change what is timed).

Smoke test (timings meaningless): `python benchmarks/bench_model.py --shapes minilm --inputs 1x32
--repeats 2 --no-rss --backends all`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ort_baseline, also when imported as a module

SHAPES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),  # tests only
}
DEFAULT_INPUTS = "8x128,1x128,1x32"
TORCH_ROWS = ["fp32 eager", "fp32 sdpa", "int8 dynamic"]
ORT_ROWS = ["ORT fp32", "ORT int8"]
# packed rows, each run once per backend: row -> the checkpoint directory it loads
PACKED_ROWS = {"packed 1-1-1": "packed", "packed 1-1-1 unfused": "packed", "packed w1a4": "w1a4",
               "packed w1a4 unfused": "w1a4", "packed w1a8": "w1a8", "ensemble 2x w1a4": "ensemble"}
RECIPE_DIRS = {"packed": "bibert", "w1a4": "w1a4", "w1a8": "w1a8"}
MEMORY_ROWS = ["fp32 eager", "int8 dynamic", "ORT fp32", "ORT int8", "packed 1-1-1", "packed w1a4", "packed w1a8",
               "ensemble 2x w1a4"]
REFERENCES = {"x fp32": "fp32 eager", "x int8": "int8 dynamic", "x ORT int8": "ORT int8"}
RSS_INPUT = (8, 128)
LOAD_WARN = 0.5
# ORT sanity: the optimized fp32 graph must reproduce torch's logits; int8 must stay near fp32
ORT_FP32_TOL = 1e-3
ORT_INT8_REL_TOL = 0.1  # of the fp32 logits' largest magnitude (plus 1e-2 absolute)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3


def _random_classifier(shape: str, seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", vocab_size=30522, num_labels=2, max_position_embeddings=512, **SHAPES[shape])
    return AutoModelForSequenceClassification.from_config(cfg)


def _save_student(model, recipe_name: str, out_dir: Path) -> None:
    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    recipe = resolve_recipe(recipe_name)
    plan = quantize_(model, recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_packed(model, out_dir, recipe, plan)  # writes recipe.json last: the directory is complete


def build(shape: str, root: Path) -> dict:
    """Save an fp32 checkpoint, its packed 1-1-1 / w1a4 / w1a8 students and a 2-member w1a4 ensemble
    under root/shape (reused when complete); return their paths."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.ensemble.model import MANIFEST_FILE, write_manifest

    d = root / shape
    paths = {"fp32": d / "fp32", **{k: d / k for k in RECIPE_DIRS}, "ensemble": d / "ensemble-w1a4"}
    if not (paths["fp32"] / "config.json").is_file():
        _random_classifier(shape, 0).save_pretrained(paths["fp32"])
    for key, recipe_name in RECIPE_DIRS.items():
        if not (paths[key] / "recipe.json").is_file():
            model = AutoModelForSequenceClassification.from_pretrained(str(paths["fp32"]), dtype=torch.float32)
            _save_student(model, recipe_name, paths[key])
    ens = paths["ensemble"]
    if not (ens / MANIFEST_FILE).is_file():
        members = []
        for k in range(2):  # two members with different weights, as a trained ensemble would have
            _save_student(_random_classifier(shape, 100 + k), "w1a4", ens / f"member-{k}")
            members.append({"path": f"member-{k}", "weight": 1.0, "recipe": "w1a4", "error": None})
        write_manifest(ens, task="sst2", num_labels=2, strategy="bagging", members=members, teacher=None)
    return paths


def load(kind: str, paths: dict):
    """A torch or packed row's model (`kind` without the backend label)."""
    import torch
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.models import quiet_transformers

    quiet_transformers()
    if kind in PACKED_ROWS:
        from bebert_cli.quant import fused_layer
        from bebert_cli.quant.packed import load_packed

        if kind.startswith("ensemble"):
            from bebert_cli.ensemble.model import load_ensemble

            return load_ensemble(paths["ensemble"], runtime="packed")
        model = load_packed(paths[PACKED_ROWS[kind]], runtime="packed")
        if kind.endswith("unfused"):  # the packed runtime without the fused layers (bench only)
            fused_layer.uninstall(model)
        return model
    attn = "eager" if kind == "fp32 eager" else "sdpa"
    model = AutoModelForSequenceClassification.from_pretrained(str(paths["fp32"]), attn_implementation=attn,
                                                               dtype=torch.float32).eval()
    if kind == "int8 dynamic":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao deprecation notice
            model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return model.eval()


def inputs(batch: int, seq: int):
    import torch

    g = torch.Generator().manual_seed(batch * 1000 + seq)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def label(row: str, backend: str | None) -> str:
    return row if backend is None else f"{row} [{backend}]"


def torch_call(model, batch: dict, backend: str | None = None):
    """One forward as a zero-argument callable; packed rows switch to their kernel backend around it."""
    if backend is None:
        return lambda: model(**batch)
    from bebert_cli import kernels

    def run():
        prev = kernels.set_backend(backend)
        try:
            return model(**batch)
        finally:
            kernels.set_backend(prev)

    return run


def time_rows(calls: dict, repeats: int, warmup: int) -> dict:
    """calls: label -> zero-argument forward. Round-robin, so background load spreads over every row."""
    import torch

    times = {k: [] for k in calls}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in calls.values():
                fn()
        for _ in range(repeats):
            for k, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "best_ms": min(v), "runs": len(v), "all_ms": v} for k, v in times.items()}


def ort_check(sessions: dict, fp32_model, batch: dict) -> dict:
    """ORT fp32 against torch fp32 (the export), ORT int8 against ORT fp32 (the quantization)."""
    import numpy as np
    import torch

    import ort_baseline

    with torch.inference_mode():
        ref = fp32_model(**batch).logits.numpy()
    f = ort_baseline.feeds(batch)
    fp32 = sessions["ORT fp32"].run(["logits"], f)[0]
    int8 = sessions["ORT int8"].run(["logits"], f)[0]
    scale = float(np.abs(fp32).max())
    d_fp32, d_int8 = float(np.abs(fp32 - ref).max()), float(np.abs(int8 - fp32).max())
    ok_fp32, ok_int8 = d_fp32 <= ORT_FP32_TOL, d_int8 <= ORT_INT8_REL_TOL * scale + 1e-2
    return {"fp32_vs_torch_max_abs": d_fp32, "int8_vs_fp32_max_abs": d_int8, "fp32_max_abs_logit": scale,
            "int8_argmax_agreement": float((int8.argmax(-1) == fp32.argmax(-1)).mean()),
            "ok": bool(ok_fp32 and ok_int8)}


# The kernel entry points a packed forward calls, by what they compute: the fused 1-1-1 layer calls
# binary_gemm / bi_attention_bits, the unfused one binary_linear / bi_attention; w1a4 / w1a8 call
# lsq_linear (LSQ-quantizing linears; the fused layer its LsqGemm objects) and, for the softmax attention, lsq_attention_scores /
# lsq_attention_context (packed format 3: both products on the integers) or lsq_quantize (format 2:
# the Q/K/V/P quantizers, the products in torch float).
KERNEL_GROUPS = {"binary_gemm": "linears", "binary_linear": "linears", "lsq_linear": "linears",
                 "lowbit_linear": "linears", "bi_attention_bits": "attention", "bi_attention": "attention",
                 "lsq_quantize": "attention", "lsq_attention_scores": "attention", "lsq_attention_context": "attention"}
PROFILED_ROWS = ("packed 1-1-1", "packed w1a4", "packed w1a8")


def profile_packed(model, batch: dict, repeats: int) -> dict:
    """Time spent in the linear kernels, the attention kernels and the rest of the forward."""
    import torch

    from bebert_cli import kernels

    groups = {name: g for name, g in KERNEL_GROUPS.items() if hasattr(kernels, name)}
    spent = {"linears": 0.0, "attention": 0.0}
    originals = {name: getattr(kernels, name) for name in groups}
    gemm_call, depth = kernels.BinaryGemm.__call__, [0]  # the fused layers call their GEMM objects
    lsq_call = kernels.LsqGemm.__call__

    def wrap(name, fn=None):
        fn = fn or originals[name]

        def timed(*a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:  # binary_linear -> binary_gemm -> BinaryGemm: count the outer call only
                    spent[groups[name]] += (time.perf_counter() - t0) * 1e3

        return timed

    totals = []
    try:
        kernels.BinaryGemm.__call__ = wrap("binary_gemm", gemm_call)
        kernels.LsqGemm.__call__ = wrap("lsq_linear", lsq_call)
        for name in groups:
            setattr(kernels, name, wrap(name))
        with torch.inference_mode():
            model(**batch)
            spent.update({k: 0.0 for k in spent})
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(**batch)
                totals.append((time.perf_counter() - t0) * 1e3)
    finally:
        kernels.BinaryGemm.__call__, kernels.LsqGemm.__call__ = gemm_call, lsq_call
        for name, fn in originals.items():
            setattr(kernels, name, fn)
    total = sum(totals) / len(totals)
    out = {k: v / len(totals) for k, v in spent.items()}
    out["other"] = total - sum(out.values())
    out["total"] = total
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(**batch)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    out["top_torch_ops_ms"] = {e.key: round(e.self_cpu_time_total / 1e3, 2) for e in ops}
    return out


def kernel_call_overhead(model, batch: dict, repeats: int) -> dict:
    """Per forward: calls into `bebert_cli.kernels`, time in those Python wrappers and in the C extension
    under them; their difference per call is the wrappers' own overhead (argument checks, allocations),
    which batch-1 latency pays 5 times per layer. The timers themselves add about 1 us a call to it."""
    import torch

    from bebert_cli import kernels

    if kernels._ext is None:
        return {}
    names = tuple(n for n in KERNEL_GROUPS if hasattr(kernels, n))
    originals, real_ext = {n: getattr(kernels, n) for n in names}, kernels._ext
    gemm_call, lsq_call = kernels.BinaryGemm.__call__, kernels.LsqGemm.__call__  # what the fused layers call
    acc = {"calls": 0, "wrapper_s": 0.0, "c_s": 0.0, "depth": 0}

    def wrap(fn):
        def timed(*a, **k):
            acc["depth"] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc["depth"] -= 1
                if acc["depth"] == 0:  # binary_linear calls binary_gemm: count the outer call only
                    acc["wrapper_s"] += time.perf_counter() - t0
                    acc["calls"] += 1

        return timed

    class TimedExt:
        def __getattr__(self, name):
            fn = getattr(real_ext, name)

            def timed(*a):
                t0 = time.perf_counter()
                try:
                    return fn(*a)
                finally:
                    acc["c_s"] += time.perf_counter() - t0

            return timed if callable(fn) else fn

    try:
        kernels.BinaryGemm.__call__, kernels.LsqGemm.__call__ = wrap(gemm_call), wrap(lsq_call)
        for n in names:
            setattr(kernels, n, wrap(originals[n]))
        kernels._ext = TimedExt()
        with torch.inference_mode():
            model(**batch)
            acc.update(calls=0, wrapper_s=0.0, c_s=0.0)
            for _ in range(repeats):
                model(**batch)
    finally:
        kernels._ext = real_ext
        kernels.BinaryGemm.__call__, kernels.LsqGemm.__call__ = gemm_call, lsq_call
        for n, fn in originals.items():
            setattr(kernels, n, fn)
    calls = acc["calls"] / repeats
    return {"kernel_calls_per_forward": calls, "kernel_wrappers_ms": acc["wrapper_s"] * 1e3 / repeats,
            "kernel_c_ms": acc["c_s"] * 1e3 / repeats,
            "python_us_per_kernel_call": (acc["wrapper_s"] - acc["c_s"]) * 1e6 / max(1, acc["calls"])}


def rss_child(kind: str, paths: dict, batch: int, seq: int) -> None:
    import resource

    import torch

    # The baseline imports what every row imports (the BERT modeling code, bebert, the kernels);
    # the ORT rows' baseline imports onnxruntime too.
    import transformers.models.bert.modeling_bert  # noqa: F401

    from bebert_cli import kernels  # noqa: F401
    from bebert_cli.quant import packed, runtime  # noqa: F401

    if kind.startswith("ORT") or kind == "baseline ort":
        import ort_baseline

        if kind != "baseline ort":
            sess = ort_baseline.session(paths["ort_" + kind.split()[1]], torch.get_num_threads())
            ort_baseline.runner(sess, inputs(batch, seq))()
    elif kind != "baseline":
        model = load(kind, paths)
        with torch.inference_mode():
            model(**inputs(batch, seq))
    # ru_maxrss survives fork + execve on Linux (the child starts with the parent's peak), so the
    # peak of this process's own address space, VmHWM, is the number reported; ru_maxrss is kept.
    import gc

    gc.collect()
    status = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                status[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"maxrss_mb": status.get("VmHWM", maxrss), "ru_maxrss_mb": maxrss, "vmhwm_mb": status.get("VmHWM"),
                      "rss_now_mb": status.get("VmRSS")}))


def measure_rss(kind: str, paths: dict, threads: int, backend: str) -> dict | None:
    cmd = [sys.executable, __file__, "--rss-child", kind, "--paths-json", json.dumps({k: str(v) for k, v in paths.items()}),
           "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BEBERT_KERNEL_BACKEND": backend}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, KeyError):
        print(f"warning: RSS child for {kind} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.suffix in (".safetensors", ".onnx")) / 1e6


def parse_inputs(text: str) -> list[tuple[int, int]]:
    from bebert_cli.errors import UsageError

    feeds = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            b, s = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"--inputs: {item!r} is not BATCHxSEQ (e.g. 8x128)") from None
        if b < 1 or not 2 <= s <= 512:
            raise UsageError(f"--inputs: {item!r} needs a batch >= 1 and 2 <= sequence length <= 512")
        feeds.append((b, s))
    if not feeds:
        raise UsageError("--inputs names no input shape")
    return feeds


def parse_shapes(text: str) -> list[str]:
    from bebert_cli.errors import UsageError

    shapes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise UsageError(f"--shapes: unknown {unknown or text!r}; choose from {', '.join(SHAPES)}")
    return shapes


def parse_backends(text: str | None) -> list[str]:
    """`all`: every compiled backend (fastest first); else a comma list; None: the backend in use."""
    from bebert_cli import kernels
    from bebert_cli.errors import UsageError

    available = kernels.available_backends()
    if text is None:
        return [kernels.backend()]
    if text.strip() == "all":
        compiled = [b for b in available if b != "torch"]
        if not compiled:
            raise UsageError("--backends all: no compiled kernel backend here (extension not built); "
                             "name --backends torch to time the pure-torch fallback")
        return compiled
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in available]
    if bad or not names:
        raise UsageError(f"--backends: {', '.join(bad) or repr(text)} not available here; choose from "
                         f"all, {', '.join(available)}")
    return list(dict.fromkeys(names))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per row (the docs' numbers use >= 10)")
    # 10 = the warm-up and 3 settings x serial.TRIALS (3) thread-setting trials of a packed model (torch is
    # not imported yet here: OMP_NUM_THREADS must be set first)
    ap.add_argument("--warmup", type=int, default=10, help="untimed forwards per row first")
    ap.add_argument("--shapes", default="bert-base,minilm", help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--inputs", default=DEFAULT_INPUTS, help="comma list of BATCHxSEQ")
    ap.add_argument("--backends", help="kernel backends for the packed rows: all (every compiled one) or a comma "
                                       "list (default: the one in use)")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime rows")
    ap.add_argument("--json", metavar="FILE", help="write everything measured as JSON")
    ap.add_argument("--profile", action="store_true", help="break the packed 1-1-1 model's time down")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--workdir", help="keep the generated checkpoints here (default: a temp dir)")
    ap.add_argument("--omp-wait-policy", choices=["default", "passive", "active"], default="default",
                    help="OMP_WAIT_POLICY for every row (default: leave the environment as it is). On a loaded "
                         "machine libgomp's spinning workers steal the cores the main thread needs; passive "
                         "removes that (see docs/performance.md)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--paths-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch / libgomp start
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_child, json.loads(args.paths_json), *RSS_INPUT)
        return 0

    from bebert_cli.errors import UsageError

    try:
        if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
            raise UsageError("--threads and --repeats must be >= 1, --warmup >= 0")
        shapes, feeds, backends = parse_shapes(args.shapes), parse_inputs(args.inputs), parse_backends(args.backends)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.repeats < 10:
        print(f"warning: --repeats {args.repeats} < 10: a development run, not a result", file=sys.stderr)
    import ort_baseline

    ort_skip = "--no-ort" if args.no_ort else ort_baseline.missing()
    if ort_skip:
        print(f"ONNX Runtime rows skipped: {ort_skip}", file=sys.stderr)
    results = run(args, shapes, feeds, backends, ort_skip)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def run(args, shapes: list[str], feeds: list[tuple[int, int]], backends: list[str], ort_skip: str | None) -> dict:
    import torch

    import ort_baseline
    from bebert_cli import kernels
    from bebert_cli.models import quiet_transformers

    quiet_transformers()  # no progress bars from building and loading the checkpoints
    load_start = loadavg()
    if load_start[0] > LOAD_WARN:
        print(f"warning: machine not idle (load average {load_start}); latencies are upper bounds", file=sys.stderr)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__, "threads": args.threads, "kernel_backend": kernels.backend(),
        "backends": backends, "python": platform.python_version(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "cpu_flags": _cpu_flags(), "repeats": args.repeats, "warmup": args.warmup, "loadavg_start": load_start,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)"),
        "ort": f"skipped: {ort_skip}" if ort_skip else ort_baseline.versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }  # fmt: skip
    results = {"meta": meta, "latency": [], "memory": [], "profile": {}, "ort": {}, "ensemble_vs_members": [],
               "thread_choice": {}}
    with tempfile.TemporaryDirectory(prefix="bebert-bench-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        for shape in shapes:
            print(f"[{shape}] building checkpoints ...", file=sys.stderr)
            paths = build(shape, root)
            sessions = {}
            if not ort_skip:
                print(f"[{shape}] ONNX export, optimizer, quantize_dynamic ...", file=sys.stderr)
                try:
                    info = ort_baseline.build(paths["fp32"], root / shape / "onnx",
                                              SHAPES[shape]["num_attention_heads"], SHAPES[shape]["hidden_size"])
                    sessions = {row: ort_baseline.session(info[row.split()[1]], args.threads) for row in ORT_ROWS}
                    paths["ort_fp32"], paths["ort_int8"] = Path(info["fp32"]), Path(info["int8"])
                except Exception as exc:  # noqa: BLE001 - the other rows of this shape still run
                    info, sessions = {"error": f"{type(exc).__name__}: {exc}"}, {}
                    print(f"warning: [{shape}] ONNX Runtime rows skipped: {info['error'][:300]}", file=sys.stderr)
                results["ort"][shape] = info
            models = {k: load(k, paths) for k in TORCH_ROWS + list(PACKED_ROWS)}
            if sessions:
                check = ort_check(sessions, models["fp32 eager"], inputs(*feeds[0]))
                results["ort"][shape]["check"] = check
                if not check["ok"]:
                    print(f"warning: [{shape}] ONNX Runtime logits off: {check}", file=sys.stderr)
            for b, s in feeds:
                batch = inputs(b, s)
                calls, rows = {}, {}
                for k in TORCH_ROWS:
                    calls[k], rows[k] = torch_call(models[k], batch), (k, None)
                for k, sess in sessions.items():
                    calls[k], rows[k] = ort_baseline.runner(sess, batch), (k, None)
                for bk in backends:
                    for k in PACKED_ROWS:
                        calls[label(k, bk)], rows[label(k, bk)] = torch_call(models[k], batch, bk), (k, bk)
                print(f"[{shape}] {b}x{s}: {args.repeats} runs x {len(calls)} rows ...", file=sys.stderr)
                timing = time_rows(calls, args.repeats, args.warmup)
                for k, t in timing.items():
                    results["latency"].append({"model": shape, "input": f"{b}x{s}", "row": k, "recipe_row": rows[k][0],
                                               "backend": rows[k][1], **t})
                if args.profile:  # each profiled row on each backend (1-1-1's key without the row: its history)
                    for bk in backends:
                        prev = kernels.set_backend(bk)
                        try:
                            n = max(3, args.repeats // 2)
                            for row in PROFILED_ROWS:
                                prof = profile_packed(models[row], batch, n)
                                prof.update(kernel_call_overhead(models[row], batch, n), row=row)
                                key = f"{shape} {b}x{s} [{bk}]"
                                results["profile"][key if row == "packed 1-1-1" else f"{row}, {key}"] = prof
                        finally:
                            kernels.set_backend(prev)
            for k in PACKED_ROWS:  # what the measured thread rule chose, per backend and size (quant/serial.py)
                choice = getattr(models[k], "_bebert_thread_choice", None)
                if choice is not None:
                    results["thread_choice"][f"{shape} {k}"] = choice.summary()
            del models, sessions
            if not args.no_rss:
                print(f"[{shape}] peak RSS subprocesses ...", file=sys.stderr)
                results["memory"] += memory_rows(shape, paths, args.threads, backends[0], with_ort="ort_int8" in paths)
    meta["loadavg_end"] = loadavg()
    add_ratios(results)
    return results


def memory_rows(shape: str, paths: dict, threads: int, backend: str, with_ort: bool) -> list[dict]:
    base = {"baseline": measure_rss("baseline", paths, threads, backend) or {}}
    if with_ort:
        base["baseline ort"] = measure_rss("baseline ort", paths, threads, backend) or {}
    out = []
    for k in MEMORY_ROWS:
        if k.startswith("ORT") and not with_ort:
            continue
        which = "baseline ort" if k.startswith("ORT") else "baseline"
        rss = measure_rss(k, paths, threads, backend) or {}
        peak, now, b0 = rss.get("maxrss_mb"), rss.get("rss_now_mb"), base[which].get("maxrss_mb")
        disk = {"fp32 eager": "fp32", "int8 dynamic": "fp32", "ORT fp32": "ort_fp32", "ORT int8": "ort_int8"}.get(k)
        disk_path = paths[disk] if disk else paths[PACKED_ROWS[k]]
        out.append({
            "model": shape, "row": k, "peak_rss_mb": peak, "rss_after_mb": now, "baseline": which, "baseline_rss_mb": b0,
            "peak_over_baseline_mb": None if peak is None or b0 is None else peak - b0,
            "after_over_baseline_mb": None if now is None or b0 is None else now - b0,
            "disk_mb": Path(disk_path).stat().st_size / 1e6 if Path(disk_path).is_file() else dir_mb(disk_path),
            "raw": rss,
        })  # fmt: skip
    fp32 = next((r["peak_over_baseline_mb"] for r in out if r["row"] == "fp32 eager"), None)
    for r in out:
        r["peak_over_vs_fp32"] = None if not fp32 or r["peak_over_baseline_mb"] is None else r["peak_over_baseline_mb"] / fp32
    return out


def add_ratios(results: dict) -> None:
    """x fp32 / x int8 / x ORT int8 (reference median / row median, and the same for bests) per row;
    the ensemble's cost against two w1a4 forwards of the same backend."""
    by = {(r["model"], r["input"], r["row"]): r for r in results["latency"]}
    for r in results["latency"]:
        for col, ref_row in REFERENCES.items():
            ref = by.get((r["model"], r["input"], ref_row))
            key = col.replace(" ", "_").lower()
            r[key] = None if ref is None else ref["median_ms"] / r["median_ms"]
            r[key + "_best"] = None if ref is None else ref["best_ms"] / r["best_ms"]
        if r["recipe_row"] == "ensemble 2x w1a4":
            member = by.get((r["model"], r["input"], label("packed w1a4", r["backend"])))
            if member is not None:
                results["ensemble_vs_members"].append({
                    "model": r["model"], "input": r["input"], "backend": r["backend"],
                    "ensemble_median_ms": r["median_ms"], "w1a4_median_ms": member["median_ms"],
                    "ensemble_over_two_members": r["median_ms"] / (2 * member["median_ms"]),
                })  # fmt: skip


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The SIMD flags that decide which kernel backend a CPU gets (from /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq", "popcnt", "fma")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def _ratio(v) -> str:
    return "" if v is None else f"{v:.2f}"


def report(results: dict) -> str:
    m = results["meta"]
    ort = m["ort"] if isinstance(m["ort"], str) else f"onnxruntime {m['ort']['onnxruntime']}"
    lines = [f"CPU {m['cpu']} ({m['cores']} cores; {' '.join(m['cpu_flags']) or 'no SIMD flags read'}), kernels "
             f"{', '.join(m['backends'])}, threads {m['threads']}, OMP_WAIT_POLICY {m['omp_wait_policy']}, "
             f"torch {m['torch']}, {ort}, {m['repeats']} runs (+{m['warmup']} warm-up), "
             f"load average {m['loadavg_start']} -> {m.get('loadavg_end')}"]
    groups: dict = {}
    for r in results["latency"]:
        groups.setdefault((r["model"], r["input"]), []).append(r)
    for (model, inp), rows in groups.items():
        b, s = inp.split("x")
        lines += ["", f"### {model}, {b} x {s}", "", "| row | median ms | best ms | x fp32 | x int8 | x ORT int8 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['row']} | {r['median_ms']:.1f} | {r['best_ms']:.1f} | {_ratio(r['x_fp32'])} | "
                         f"{_ratio(r['x_int8'])} | {_ratio(r['x_ort_int8'])} |")
        ens = [e for e in results["ensemble_vs_members"] if (e["model"], e["input"]) == (model, inp)]
        if ens:
            lines += ["", "ensemble 2x w1a4 / (2 x packed w1a4), medians: " +
                      ", ".join(f"{e['ensemble_over_two_members']:.2f} [{e['backend']}]" for e in ens)]
    if results.get("thread_choice"):
        lines += ["", "Thread setting each packed model chose (OMP_WAIT_POLICY=passive, `quant/serial.py`): " + "; ".join(
            f"{k}: " + ", ".join(f"{c} {v}" for c, v in choice.items()) for k, choice in results["thread_choice"].items()
            if choice)]
    for shape, info in results["ort"].items():
        if "error" in info:
            lines += ["", f"ORT {shape}: rows skipped: {info['error']}"]
            continue
        c = info.get("check", {})
        lines += ["", f"ORT {shape}: exporter {info['exporter']}, fused {info['fused_operators']}; logits: fp32 vs torch "
                      f"max |diff| {c.get('fp32_vs_torch_max_abs', float('nan')):.2g}, int8 vs fp32 "
                      f"{c.get('int8_vs_fp32_max_abs', float('nan')):.2g} (largest |logit| "
                      f"{c.get('fp32_max_abs_logit', float('nan')):.2g}){'' if c.get('ok') else ' CHECK FAILED'}"]
    if results["memory"]:
        lines += ["", "| model | row | peak RSS MB | peak over imports-only MB | peak over, / fp32's | "
                  "RSS after load + forward MB | after, over imports-only MB | weights on disk MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in results["memory"]:
            f = (lambda v: "n/a" if v is None else f"{v:.0f}")
            lines.append(f"| {r['model']} | {r['row']} | {f(r['peak_rss_mb'])} | {f(r['peak_over_baseline_mb'])} | "
                         f"{_ratio(r['peak_over_vs_fp32']) or 'n/a'} | {f(r['rss_after_mb'])} | "
                         f"{f(r['after_over_baseline_mb'])} | {r['disk_mb']:.1f} |")
        lines += ["", "(imports-only: bebert + transformers' BERT code + the kernels; for the ORT rows, onnxruntime too)"]
    if results["profile"]:
        lines += ["", "| packed row, model input [backend] | total ms | linear kernels ms | attention kernels ms | other ms | "
                  "kernel calls | Python us per kernel call | top torch ops (self ms) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for k, p in results["profile"].items():
            ops = ", ".join(f"{n} {v}" for n, v in list(p["top_torch_ops_ms"].items())[:5])
            calls, per = p.get("kernel_calls_per_forward"), p.get("python_us_per_kernel_call")
            name = k if k.startswith(p["row"]) else f"{p['row']}, {k}"
            lines.append(f"| {name} | {p['total']:.1f} | {p['linears']:.1f} | {p['attention']:.1f} | {p['other']:.1f} | "
                         f"{'n/a' if calls is None else f'{calls:.0f}'} | {'n/a' if per is None else f'{per:.1f}'} | {ops} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

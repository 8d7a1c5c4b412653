"""End-to-end benchmark: a packed 1-1-1 (BiBERT) model on the bit kernels vs torch fp32 and int8.

    python benchmarks/bench_model.py [--repeats 10] [--json results.json] [--profile]

What is measured, in one process, on one machine, with a fixed thread count (default 2, set in
OMP_NUM_THREADS before torch is imported, and torch.set_num_threads):

* models: BERT-base shape (12 x 768, FFN 3072, vocab 30522) and MiniLM shape (6 x 384, FFN 1536),
  BertForSequenceClassification with random weights (speed does not depend on the values);
* rows per model and input (batch 8 x 128 tokens and 1 x 128, no padding):
  - `fp32 eager`: the fp32 model, `attn_implementation="eager"`;
  - `fp32 sdpa`: the fp32 model with torch's scaled-dot-product attention (transformers' default);
  - `int8 dynamic`: `torch.ao.quantization.quantize_dynamic(fp32 sdpa, {nn.Linear}, torch.qint8)`,
    what a user would pick instead of binarizing;
  - `packed 1-1-1`: `quantize_(recipe bibert)` -> `save_packed` -> `load_packed(runtime="packed")`,
    what a user gets (its BiBERT layers fused: bits from the QKV GEMM to the FFN output);
  - `packed 1-1-1 unfused`: the same model with `fused_layer.uninstall`: every binary linear and the
    Bi-Attention as separate kernels on float tensors (the runtime before the fused layer);
* latency: warm-up, then `--repeats` (>= 10) timed forwards per row, the rows interleaved
  round-robin so that background load hits every row alike; median and best, in ms;
* idle check: /proc/loadavg before and after, recorded; a warning if the 1-minute load is above
  0.5 (the numbers are then upper bounds, and the ratios noisier);
* peak resident memory: each model loaded in a fresh subprocess (fp32 / int8 from a saved fp32
  checkpoint, packed from the packed directory) plus one 8 x 128 forward; the child's VmHWM
  (/proc/self/status; `resource.getrusage(RUSAGE_SELF).ru_maxrss` where there is no /proc: on
  Linux ru_maxrss is inherited through fork + exec from this big parent, so it is not usable here),
  also for a process that only imports the libraries;
* `--profile`: where the (fused) packed model's time goes (binary GEMM kernels, Bi-Attention kernel,
  everything else) by timers around the kernel calls, plus torch.profiler's top operators.

Prints markdown tables; `--json FILE` writes everything measured.
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

SHAPES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}
INPUTS = [(8, 128), (1, 128)]
ROWS = ["fp32 eager", "fp32 sdpa", "int8 dynamic", "packed 1-1-1", "packed 1-1-1 unfused"]
LOAD_WARN = 0.5


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3


def build(shape: str, root: Path) -> dict:
    """Save an fp32 checkpoint and its packed 1-1-1 form under root/shape; return their paths."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    fp32_dir, packed_dir = root / shape / "fp32", root / shape / "packed"
    if not (fp32_dir / "config.json").is_file() or not (packed_dir / "model.safetensors").is_file():
        torch.manual_seed(0)
        cfg = AutoConfig.for_model("bert", vocab_size=30522, num_labels=2, max_position_embeddings=512, **SHAPES[shape])
        model = AutoModelForSequenceClassification.from_config(cfg)
        model.save_pretrained(fp32_dir)
        recipe = resolve_recipe("bibert")
        plan = quantize_(model, recipe)
        packed_dir.mkdir(parents=True, exist_ok=True)
        save_packed(model, packed_dir, recipe, plan)
        del model
    return {"fp32": fp32_dir, "packed": packed_dir}


def load(kind: str, paths: dict):
    import torch
    from torch import nn
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.models import quiet_transformers

    quiet_transformers()
    if kind.startswith("packed 1-1-1"):
        from bebert_cli.quant import fused_layer
        from bebert_cli.quant.packed import load_packed

        model = load_packed(paths["packed"], runtime="packed")
        if kind.endswith("unfused"):  # the packed runtime without the fused BiBERT layer (bench only)
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


def time_rows(models: dict, batch: dict, repeats: int, warmup: int) -> dict:
    import torch

    times = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m(**batch)
        for _ in range(repeats):
            for k, m in models.items():  # round-robin: background load spreads over every row
                t0 = time.perf_counter()
                m(**batch)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "best_ms": min(v), "runs": len(v), "all_ms": v} for k, v in times.items()}


def profile_packed(model, batch: dict, repeats: int) -> dict:
    """Time spent in the binary-linear kernels, the Bi-Attention kernel and the rest of the forward."""
    import torch

    from bebert_cli import kernels

    # the fused layer calls binary_gemm / bi_attention_bits, the unfused one binary_linear / bi_attention
    groups = {"binary_gemm": "binary_linear", "binary_linear": "binary_linear", "bi_attention_bits": "bi_attention",
              "bi_attention": "bi_attention"}
    spent = {"binary_linear": 0.0, "bi_attention": 0.0}
    originals = {name: getattr(kernels, name) for name in groups}

    def wrap(name):
        fn = originals[name]

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[groups[name]] += (time.perf_counter() - t0) * 1e3

        return timed

    totals = []
    try:
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


def rss_child(kind: str, paths: dict, batch: int, seq: int) -> None:
    import resource

    import torch

    # The baseline imports what every row imports (the BERT modeling code, bebert, the kernels).
    import transformers.models.bert.modeling_bert  # noqa: F401

    from bebert_cli import kernels  # noqa: F401
    from bebert_cli.quant import packed, runtime  # noqa: F401

    if kind != "baseline":
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


def measure_rss(kind: str, paths: dict, threads: int) -> dict | None:
    cmd = [sys.executable, __file__, "--rss-child", kind, "--fp32-dir", str(paths["fp32"]),
           "--packed-dir", str(paths["packed"]), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, KeyError):
        print(f"warning: RSS child for {kind} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors")) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per row (the docs' numbers use >= 10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--shapes", default="bert-base,minilm")
    ap.add_argument("--inputs", default="8x128,1x128", help="comma list of BATCHxSEQ")
    ap.add_argument("--json", metavar="FILE", help="write everything measured as JSON")
    ap.add_argument("--profile", action="store_true", help="break the packed model's time down")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--workdir", help="keep the generated checkpoints here (default: a temp dir)")
    ap.add_argument("--omp-wait-policy", choices=["default", "passive", "active"], default="default",
                    help="OMP_WAIT_POLICY for every row (default: leave the environment as it is). On a loaded "
                         "machine libgomp's spinning workers steal the cores the main thread needs; passive "
                         "removes that (see docs/performance.md)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--fp32-dir", help=argparse.SUPPRESS)
    ap.add_argument("--packed-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch / libgomp start
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args.rss_child, {"fp32": args.fp32_dir, "packed": args.packed_dir}, 8, 128)
        return 0
    if args.repeats < 10:
        print(f"warning: --repeats {args.repeats} < 10: a development run, not a result", file=sys.stderr)

    from bebert_cli import kernels

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    feeds = [tuple(int(v) for v in s.lower().split("x")) for s in args.inputs.split(",") if s.strip()]
    load_start = loadavg()
    if load_start[0] > LOAD_WARN:
        print(f"warning: machine not idle (load average {load_start}); latencies are upper bounds", file=sys.stderr)
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__, "threads": args.threads, "kernel_backend": kernels.backend(),
        "python": platform.python_version(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "repeats": args.repeats, "warmup": args.warmup, "loadavg_start": load_start,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }  # fmt: skip
    results = {"meta": meta, "latency": [], "memory": [], "profile": {}}
    with tempfile.TemporaryDirectory(prefix="bebert-bench-") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        for shape in shapes:
            print(f"[{shape}] building checkpoints ...", file=sys.stderr)
            paths = build(shape, root)
            models = {k: load(k, paths) for k in ROWS}
            for b, s in feeds:
                print(f"[{shape}] {b}x{s}: {args.repeats} runs x {len(models)} rows ...", file=sys.stderr)
                timing = time_rows(models, inputs(b, s), args.repeats, args.warmup)
                for k, t in timing.items():
                    results["latency"].append({"model": shape, "input": f"{b}x{s}", "row": k, **t})
                if args.profile:
                    results["profile"][f"{shape} {b}x{s}"] = profile_packed(models["packed 1-1-1"], inputs(b, s),
                                                                            max(3, args.repeats // 2))
            del models
            if not args.no_rss:
                print(f"[{shape}] peak RSS subprocesses ...", file=sys.stderr)
                base = measure_rss("baseline", paths, args.threads) or {}
                for k in ("fp32 eager", "int8 dynamic", "packed 1-1-1"):
                    rss = measure_rss(k, paths, args.threads) or {}
                    peak, now, b0 = rss.get("maxrss_mb"), rss.get("rss_now_mb"), base.get("maxrss_mb")
                    results["memory"].append({
                        "model": shape, "row": k, "peak_rss_mb": peak, "rss_after_mb": now, "baseline_rss_mb": b0,
                        "peak_over_baseline_mb": None if peak is None or b0 is None else peak - b0,
                        "after_over_baseline_mb": None if now is None or b0 is None else now - b0,
                        "disk_mb": dir_mb(paths["packed"] if k.startswith("packed") else paths["fp32"]), "raw": rss,
                    })  # fmt: skip
    meta["loadavg_end"] = loadavg()
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(results: dict) -> str:
    m = results["meta"]
    lines = [f"threads {m['threads']}, OMP_WAIT_POLICY {m['omp_wait_policy']}, kernels {m['kernel_backend']}, torch {m['torch']}, {m['cpu']}, "
             f"{m['repeats']} runs (+{m['warmup']} warm-up), load average {m['loadavg_start']} -> {m.get('loadavg_end')}", ""]
    lines += ["| model | input | row | median ms | best ms | packed speed-up (median) | packed speed-up (best) |",
              "|---|---|---|---:|---:|---:|---:|"]
    by = {(r["model"], r["input"], r["row"]): r for r in results["latency"]}
    for (model, inp, row), r in by.items():
        p = by[(model, inp, "packed 1-1-1")]
        su = "" if row.startswith("packed") else f"{r['median_ms'] / p['median_ms']:.1f}x"
        sb = "" if row.startswith("packed") else f"{r['best_ms'] / p['best_ms']:.1f}x"
        lines.append(f"| {model} | {inp} | {row} | {r['median_ms']:.1f} | {r['best_ms']:.1f} | {su} | {sb} |")
    if results["memory"]:
        lines += ["", "| model | row | peak RSS MB | peak over imports-only MB | RSS after load + forward MB | "
                  "after, over imports-only MB | weights on disk MB |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in results["memory"]:
            f = (lambda v: "n/a" if v is None else f"{v:.0f}")
            lines.append(f"| {r['model']} | {r['row']} | {f(r['peak_rss_mb'])} | {f(r['peak_over_baseline_mb'])} | "
                         f"{f(r['rss_after_mb'])} | {f(r['after_over_baseline_mb'])} | {r['disk_mb']:.1f} |")
    if results["profile"]:
        lines += ["", "| packed model, input | total ms | binary linears ms | Bi-Attention ms | other ms | top torch ops (self ms) |",
                  "|---|---:|---:|---:|---:|---|"]
        for k, p in results["profile"].items():
            ops = ", ".join(f"{n} {v}" for n, v in list(p["top_torch_ops_ms"].items())[:5])
            lines.append(f"| {k} | {p['total']:.1f} | {p['binary_linear']:.1f} | {p['bi_attention']:.1f} | {p['other']:.1f} | {ops} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Micro-benchmark of the binary kernels against torch fp32 and int8 GEMMs.

    OMP_NUM_THREADS=2 python benchmarks/bench_kernels.py [--json out.json] [--all-backends] [--no-lowbit]

Fixed thread count (default 2, set before torch is imported), >= 10 timed runs per
case after warm-up, median and best reported in ms. Shapes are the linear layers of
BERT-base (768/3072, and 768 -> 2304: the fused Q, K, V) and MiniLM (384/1536) at 8x128 and
1x128 tokens, plus BiBERT attention (12 heads of 64, resp. 12 heads of 32) against fp32 softmax attention.
Columns: fp32 = F.linear; int8_mm = torch._int_mm on pre-quantised int8 inputs (GEMM
only); int8_dyn = dynamically quantised nn.Linear (quantises activations per call, like
binary_linear packs them); bin = bebert binary_linear (sign packing included); the fused layer's
GEMMs: ->sign = binary_gemm writing only sign bits (also the FFN input: sign(GELU(y)) = sign(y)),
bits-> = from packed sign bits to floats plus a residual; w1a8 / w1a4 = lowbit_linear. Attention
rows: bin = bi_attention on float (B, H, L, D), ->sign = bi_attention_bits (sign words in and out).
"x fp32" = fp32 median / bin median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

SHAPES = [  # (model, K, N)
    ("bert-base", 768, 768),
    ("bert-base", 768, 2304),  # the fused layer's Q, K, V as one GEMM
    ("bert-base", 768, 3072),
    ("bert-base", 3072, 768),
    ("minilm", 384, 384),
    ("minilm", 384, 1536),
    ("minilm", 1536, 384),
]
TOKENS = [(8, 128), (1, 128)]


def timeit(fn, repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(ts), "best_ms": min(ts), "runs": len(ts)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per case (>= 10)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout)")
    ap.add_argument("--all-backends", action="store_true", help="also time avx2 / scalar binary kernels")
    ap.add_argument("--quick", action="store_true", help="only the first shape of each model")
    ap.add_argument("--no-lowbit", action="store_true", help="skip the w1a8 / w1a4 columns")
    args = ap.parse_args(argv)
    args.repeats = max(10, args.repeats)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch / libgomp start

    import torch
    import torch.nn.functional as F

    from bebert_cli import kernels as bk

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")  # torch.ao deprecation noise
    best = bk.backend()
    backends = [best] + ([b for b in bk.available_backends() if b not in (best, "torch")] if args.all_backends else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    meta = {
        "torch": torch.__version__, "threads": args.threads, "backend": best, "python": sys.version.split()[0],
        "cpu": platform.processor() or platform.machine(), "loadavg_1min_at_start": load, "repeats": args.repeats,
    }  # fmt: skip
    rows = []

    def set_be(name):
        bk.set_backend(name)

    shapes = [s for i, s in enumerate(SHAPES) if not args.quick or i == 0 or SHAPES[i - 1][0] != s[0]]
    for b, l in TOKENS:
        M = b * l
        for model, K, N in shapes:
            x = torch.randn(M, K)
            wf = torch.randn(N, K)
            bias, scale = torch.randn(N), torch.rand(N)
            w = bk.prepare_binary_weight(bk.pack_signs_u8(wf), K)
            xq = torch.randint(-127, 128, (M, K), dtype=torch.int8)
            x4 = torch.randint(-8, 8, (M, K), dtype=torch.int8)
            wq = torch.randint(-127, 128, (K, N), dtype=torch.int8)
            dyn = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(K, N)), dtype=torch.qint8)
            r = {"model": model, "tokens": f"{b}x{l}", "M": M, "K": K, "N": N}
            with torch.inference_mode():
                r["fp32"] = timeit(lambda: F.linear(x, wf, bias), args.repeats)
                r["int8_mm"] = timeit(lambda: torch._int_mm(xq, wq), args.repeats)
                r["int8_dyn"] = timeit(lambda: dyn(x), args.repeats)
                for be in backends:
                    set_be(be)
                    r[f"bin[{be}]"] = timeit(lambda: bk.binary_linear(x, w, scale, bias), args.repeats)
                set_be(best)
                bits, res = bk.pack_sign_words(x), torch.randn(M, N)
                r["->sign"] = timeit(lambda: bk.binary_gemm(x, w, scale, bias, out="sign"), args.repeats)
                r["bits->"] = timeit(lambda: bk.binary_gemm(bits, w, scale, bias, residual=res), args.repeats)
                if not args.no_lowbit:
                    r["w1a8"] = timeit(lambda: bk.lowbit_linear(xq, w, scale, bias), args.repeats)
                    r["w1a4"] = timeit(lambda: bk.lowbit_linear(x4, w, scale, bias), args.repeats)
            rows.append(r)
        # attention: BERT-base (12 x 64) and MiniLM (12 x 32)
        for model, H, D in (("bert-base", 12, 64), ("minilm", 12, 32)):
            q, k, v = torch.randn(3, b, H, l, D).unbind(0)
            mask = torch.ones(b, l, dtype=torch.bool)
            r = {"model": model, "tokens": f"{b}x{l}", "M": M, "K": f"attn H={H}", "N": f"D={D}"}
            with torch.inference_mode():
                r["fp32"] = timeit(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
                for be in backends:
                    set_be(be)
                    r[f"bin[{be}]"] = timeit(lambda: bk.bi_attention(q, k, v, mask), args.repeats)
                set_be(best)
                if D % 32 == 0:
                    qkv = torch.cat([bk.pack_sign_words(t.transpose(1, 2).reshape(M, H * D)) for t in (q, k, v)], 1)
                    r["->sign"] = timeit(lambda: bk.bi_attention_bits(qkv, mask, b, H, l, D), args.repeats)
            rows.append(r)

    cols = ["fp32", "int8_mm", "int8_dyn"] + [f"bin[{be}]" for be in backends] + ["->sign", "bits->"]
    cols += [] if args.no_lowbit else ["w1a8", "w1a4"]
    print(f"\nbebert binary kernels: backend={best}, threads={args.threads}, torch {torch.__version__}, "
          f"{args.repeats} runs, median / best ms, 1-min load avg at start {load:.2f}\n")  # fmt: skip
    print("| model | tokens | K | N | " + " | ".join(cols) + " | x fp32 |")
    print("|" + "---|" * (len(cols) + 5))
    for r in rows:
        cells = [f"{r[c]['median_ms']:.3f} / {r[c]['best_ms']:.3f}" if c in r else "-" for c in cols]
        speed = r["fp32"]["median_ms"] / r[f"bin[{best}]"]["median_ms"]
        print(f"| {r['model']} | {r['tokens']} | {r['K']} | {r['N']} | " + " | ".join(cells) + f" | {speed:.1f}x |")
    if args.json:
        blob = json.dumps({"meta": meta, "rows": rows}, indent=1)
        if args.json == "-":
            print(blob)
        else:
            with open(args.json, "w") as f:
                f.write(blob)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

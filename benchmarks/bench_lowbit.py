"""The two AVX-512 kernels of 4-bit LSQ linears (w1a4), side by side: the measurements behind
`kernels.lowbit_kernel`.

    python benchmarks/bench_lowbit.py [--shapes bert-base,minilm] [--rows 16,32,128,1024] [--threads 1]
        [--repeats 21] [--json FILE]

Per model shape, its linears' (K, N) pairs (attention projections, FFN up and down); per row count M,
`kernels.lsq_linear` (float input, quantization, GEMM and epilogue: the call a packed w1a4 linear makes)
with the lookup-table kernel ("tables") and with VPDPBUSD ("dot"), alternating call by call on the same
inputs, best of --repeats each (a shared machine slows single calls, rarely all of them). Both kernels give
the same bits (checked here on every shape). Only on CPUs with the avx512_vpopcntdq level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

LINEARS = {"bert-base": [(768, 768), (768, 3072), (3072, 768)], "minilm": [(384, 384), (384, 1536), (1536, 384)],
           "tiny": [(64, 64), (64, 128), (128, 64)]}  # tiny: smoke tests


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="bert-base,minilm")
    ap.add_argument("--rows", default="16,32,128,1024")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    import torch

    from bebert_cli import kernels

    if "avx512_vpopcntdq" not in kernels.available_backends():
        print("Error: this CPU has no avx512_vpopcntdq level: there is one 4-bit kernel here", file=sys.stderr)
        return 2
    kernels.set_backend("avx512_vpopcntdq")
    torch.set_num_threads(args.threads)
    measured = kernels.lowbit_kernel()
    print(f"{args.threads} thread(s), best of {args.repeats}; this process's measured choice: {measured['kernel']} "
          f"{measured.get('ms', '')}", flush=True)
    print(f"{'shape':<10} {'M x K x N':>18} {'tables ms':>10} {'dot ms':>10} {'GMAC/s tables':>14} "
          f"{'GMAC/s dot':>11} {'tables/dot':>11}")
    rows = []
    g = torch.Generator().manual_seed(0)
    for shape in args.shapes.split(","):
        for K, N in LINEARS[shape]:
            w = kernels.prepare_binary_weight(torch.randint(0, 256, (N, (K + 7) // 8), dtype=torch.uint8, generator=g), K)
            scale, bias = torch.rand(N, generator=g), torch.randn(N, generator=g)
            for M in (int(m) for m in args.rows.split(",")):
                x = torch.randn(M, K, generator=g)
                best, outs = {}, {}
                for _ in range(args.repeats):
                    for name in kernels.LOWBIT_KERNELS:
                        kernels.set_lowbit_kernel(name)
                        t0 = time.perf_counter()
                        outs[name] = kernels.lsq_linear(x, w, 0.0625, -8, 7, scale, bias)
                        best[name] = min(best.get(name, float("inf")), (time.perf_counter() - t0) * 1e3)
                if not torch.equal(outs["tables"], outs["dot"]):
                    print(f"Error: the two kernels differ at {M} x {K} x {N}", file=sys.stderr)
                    return 1
                gmac = {k: M * K * N / (v * 1e6) for k, v in best.items()}
                row = {"shape": shape, "M": M, "K": K, "N": N, "tables_ms": best["tables"], "dot_ms": best["dot"],
                       "tables_gmacs": gmac["tables"], "dot_gmacs": gmac["dot"],
                       "tables_speedup": best["dot"] / best["tables"]}
                rows.append(row)
                print(f"{shape:<10} {f'{M} x {K} x {N}':>18} {best['tables']:>10.3f} {best['dot']:>10.3f} "
                      f"{gmac['tables']:>14.0f} {gmac['dot']:>11.0f} {row['tables_speedup']:>10.2f}x", flush=True)
    if args.json:
        from bebert_cli import hardware

        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "repeats": args.repeats, "measured_choice": measured,
                       "cpu": hardware.cpu_model(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

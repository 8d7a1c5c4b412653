"""One thread or all of them, per packed recipe and size: the measurements behind `quant/serial.py`.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_threads.py [--shapes minilm,bert-base]
        [--recipes bibert,w1a4,w1a8] [--inputs 1x16,1x32,1x64,1x128,2x128,4x128] [--threads 2] [--json FILE]

Per shape and recipe, one random-weight packed student (`quantize_` -> `save_packed` ->
`load_packed(runtime="packed")`); per input, forwards alternate between one thread (the serial rule
forced: BEBERT_SERIAL_MAX_TOKENS=100000) and --threads (BEBERT_SERIAL_MAX_TOKENS=0), two untimed rounds
first, then 15 timed rounds (inputs of at most 128 tokens) or 7; medians in ms. Set the wait policy you
deploy with: under the default (spinning) one the second thread is cheap to wake.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
          "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)}  # smoke tests


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="minilm,bert-base")
    ap.add_argument("--recipes", default="bibert,w1a4,w1a8")
    ap.add_argument("--inputs", default="1x16,1x32,1x64,1x128,2x128,4x128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import load_packed, save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    torch.set_num_threads(args.threads)
    inputs = [tuple(int(v) for v in s.split("x")) for s in args.inputs.split(",")]
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {args.threads} threads; ms: one thread / "
          f"{args.threads} threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            for recipe_name in args.recipes.split(","):
                torch.manual_seed(0)
                model = BertForSequenceClassification(BertConfig(num_labels=2, **SHAPES[shape]))
                recipe = resolve_recipe(recipe_name)
                plan = quantize_(model, recipe)
                model.eval()
                d = Path(tmp) / f"{shape}-{recipe_name}"
                d.mkdir()
                save_packed(model, d, recipe, plan)
                packed = load_packed(d, runtime="packed")
                for batch, length in inputs:
                    ids = torch.randint(1000, 20000, (batch, length))
                    mask = torch.ones(batch, length, dtype=torch.long)
                    times = {1: [], args.threads: []}
                    rounds = 15 if batch * length <= 128 else 7
                    with torch.no_grad():
                        for r in range(rounds + 2):
                            for threads in times:
                                os.environ["BEBERT_SERIAL_MAX_TOKENS"] = "100000" if threads == 1 else "0"
                                t0 = time.perf_counter()
                                packed(input_ids=ids, attention_mask=mask)
                                if r >= 2:
                                    times[threads].append((time.perf_counter() - t0) * 1e3)
                    one, many = statistics.median(times[1]), statistics.median(times[args.threads])
                    rows.append({"shape": shape, "recipe": recipe_name, "input": f"{batch}x{length}",
                                 "one_thread_ms": one, "threads_ms": many, "threads": args.threads})
                    print(f"{shape:9s} {recipe_name:6s} {batch}x{length:<4d} {one:8.2f} / {many:8.2f}  "
                          f"{'one' if one < many else str(args.threads)} faster", flush=True)
    os.environ.pop("BEBERT_SERIAL_MAX_TOKENS", None)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

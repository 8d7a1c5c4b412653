"""How much faster is a prediction pass on the packed runtime than on the simulated model?

    python benchmarks/bench_packed_predict.py MEMBER_DIR --tokenizer TOK_DIR [--rows 2000] [--data-dir DIR]

The pass an ensemble makes over its training set after each AdaBoost member (and `--from` over the
held-out slice): `predict_logits` on SST-2 training rows, batch 64, for one packed checkpoint loaded
with `runtime="simulated"` and with `runtime="packed"`, alternating, twice each. Prints one JSON
object: the times, the speed-up (best vs best) and whether the logits are identical (they must be).
Threads: whatever OMP_NUM_THREADS / torch say; set it for a fixed count.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from bebert_cli.evaluation import predict_logits
from bebert_cli.models import load_tokenizer
from bebert_cli.pipeline import load_train_data
from bebert_cli.quant.packed import load_packed
from bebert_cli.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("member", help="a packed checkpoint directory (e.g. an ensemble's member-0)")
    ap.add_argument("--tokenizer", help="directory with its tokenizer (default: the member itself)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--data-dir", default=os.environ.get("BEBERT_DATA_DIR"))
    args = ap.parse_args()
    task = get_task("sst2")
    tokenizer = load_tokenizer(args.tokenizer or args.member)
    data = load_train_data(task, tokenizer, data_dir=args.data_dir, max_seq_length=args.max_seq_length,
                           max_train_samples=args.rows, seed=42)
    times: dict[str, list[float]] = {"simulated": [], "packed": []}
    logits = {}
    for runtime in ("simulated", "packed", "simulated", "packed"):
        model = load_packed(args.member, runtime=runtime)
        start = time.perf_counter()
        logits[runtime] = predict_logits(model, data.train, data.collator, batch_size=64)
        times[runtime].append(time.perf_counter() - start)
    print(json.dumps({"member": args.member, "rows": len(data.train), "threads": torch.get_num_threads(),
                      "simulated_s": times["simulated"], "packed_s": times["packed"],
                      "speedup_best": min(times["simulated"]) / min(times["packed"]),
                      "identical_logits": bool(np.array_equal(logits["simulated"], logits["packed"]))}))


if __name__ == "__main__":
    main()

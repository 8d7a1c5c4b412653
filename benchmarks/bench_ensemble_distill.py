"""Does dropping distillation halve an ensemble's training time at no accuracy cost? (BEBERT's claim)

    python benchmarks/bench_ensemble_distill.py TEACHER --task sst2 [--members 2] [--recipe w1a4]
        [--strategy adaboost] [--max-train-samples N] [--epochs E] [--distill logits,hidden]
        [--data-dir DIR] [--out-dir DIR] [--json results.json] [--threads 2]

Trains the same ensemble twice with `bebert ensemble`, one run after the other on this machine:
with `--distill none` (BEBERT's setting) and with distillation (`--distill`, default: the
recipe's own terms, e.g. logits,hidden for w1a4/w1a8, logits,hidden,dmd for bibert). Same teacher,
data, members, strategy, seeds and hyper-parameters; only the distillation terms differ.

Reported per run: the training time of the ensemble (the members' training loops, plus the
AdaBoost passes over the training set; from bebert_run.json, so loading, tokenization and
evaluation are not in it), the whole command's wall time, the ensemble's dev main metric, its best
single member and the teacher (both evaluated by the same run). Prints a markdown table (paste it
into docs/results.md together with the printed commands), then the same numbers as JSON.
The two ensembles are kept under --out-dir (default: a new temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_command(args, output: Path, distill: str) -> list[str]:
    cmd = [sys.executable, "-m", "bebert_cli", "ensemble", args.teacher, "--task", args.task, "-o", str(output),
           "--members", str(args.members), "--strategy", args.strategy, "--recipe", args.recipe, "--distill", distill,
           "--seed", str(args.seed), "--json", "--quiet"]
    for flag, value in (("--max-train-samples", args.max_train_samples), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--max-seq-length", args.max_seq_length), ("--lr", args.lr),
                        ("--data-dir", args.data_dir), ("--eval-batch-size", args.eval_batch_size),
                        ("--mixed-precision", args.mixed_precision)):
        if value is not None:
            cmd += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if args.cpu:
        cmd.append("--cpu")
    if args.overwrite:
        cmd.append("--overwrite")
    return cmd


def run_one(args, label: str, output: Path, distill: str, env: dict) -> dict:
    cmd = build_command(args, output, distill)
    shown = "bebert " + " ".join(shlex.quote(c) for c in cmd[3:])
    print(f"[{label}] {shown}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"[{label}] bebert ensemble failed with exit code {proc.returncode}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    payload = json.loads(lines[-1])
    run = json.loads((output / "bebert_run.json").read_text())
    metric = payload["main_metric"]
    return {
        "label": label,
        "command": shown,
        "output": str(output),
        "distill": run.get("distill", []),
        "distillation": bool(run.get("distillation")),
        "members": run.get("members"),
        "strategy": run.get("strategy"),
        "recipe": run.get("recipe", {}).get("name"),
        "main_metric": metric,
        "ensemble": payload["main_value"],
        "splits": payload["splits"],
        "member_dev": run.get("member_main_values"),
        "member_weights": run.get("member_weights"),
        "best_member": run.get("best_member", {}).get("main_value"),
        "teacher": (payload.get("teacher_evaluation") or {}).get("main_value"),
        "member_train_seconds": run.get("member_train_seconds"),
        "boosting_seconds": run.get("boosting_seconds"),
        "train_seconds": run.get("train_seconds"),
        "wall_seconds": wall,
        "size_bytes": (payload.get("bytes") or {}).get("disk"),  # the ensemble's disk bytes (docs/json.md)
    }


def markdown(results: list[dict], summary: dict) -> str:
    metric = results[0]["main_metric"]
    head = ["run", "distillation", "members", "train s (ensemble)", "train s per member", "command wall s",
            f"ensemble {metric}", f"best member {metric}", f"teacher {metric}"]
    rows = []
    for r in results:
        per = ", ".join(f"{s:.1f}" for s in r["member_train_seconds"] or [])
        rows.append([r["label"], "+".join(r["distill"]) or "none", str(r["members"]), f"{r['train_seconds']:.1f}", per,
                     f"{r['wall_seconds']:.1f}", f"{100 * r['ensemble']:.2f}", f"{100 * r['best_member']:.2f}",
                     "" if r["teacher"] is None else f"{100 * r['teacher']:.2f}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Training without distillation takes {summary['train_time_ratio']:.2f}x less time than with it "
              f"({summary['train_seconds_without']:.1f} s vs {summary['train_seconds_with']:.1f} s); "
              f"dev {metric} difference (without - with): {summary['metric_delta_points']:+.2f} points."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", help="fine-tuned full-precision teacher directory")
    ap.add_argument("--task", required=True)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--recipe", default="w1a4", help="bibert | bit | w1a4 | w1a8 (BEBERT's members: w1a4, bibert)")
    ap.add_argument("--strategy", default="adaboost", choices=("adaboost", "bagging"))
    ap.add_argument("--distill", default=None,
                    help="terms of the distilled run (default: the recipe's own, e.g. logits,hidden for w1a4)")
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--eval-batch-size", type=int, default=None)
    ap.add_argument("--mixed-precision", default=None, choices=("auto", "no", "bf16"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both runs")
    ap.add_argument("--order", default="without-first", choices=("without-first", "with-first"))
    ap.add_argument("--out-dir", default=None, help="where the two ensembles are written (default: a temp dir)")
    ap.add_argument("--overwrite", action="store_true", help="replace ensembles left in --out-dir by an earlier run")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)

    from bebert_cli.quant.recipes import PRESETS

    if args.recipe not in PRESETS:
        ap.error(f"unknown recipe {args.recipe!r}; choose one of {', '.join(PRESETS)}")
    distill = args.distill or ",".join(PRESETS[args.recipe].distill)
    if distill.strip().lower() in ("", "none", "off"):
        ap.error("--distill must name the terms of the distilled run (the other run has none)")
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="bench-ensemble-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)

    plan = [("without distillation", out_dir / "ens-distill-none", "none"),
            ("with distillation", out_dir / f"ens-distill-{distill.replace(',', '-')}", distill)]
    if args.order == "with-first":
        plan.reverse()
    results = [run_one(args, label, path, terms, env) for label, path, terms in plan]
    without = next(r for r in results if not r["distillation"])
    with_ = next(r for r in results if r["distillation"])
    summary = {
        "train_seconds_without": without["train_seconds"],
        "train_seconds_with": with_["train_seconds"],
        "train_time_ratio": with_["train_seconds"] / max(without["train_seconds"], 1e-9),
        "wall_time_ratio": with_["wall_seconds"] / max(without["wall_seconds"], 1e-9),
        "metric": without["main_metric"],
        "metric_without": without["ensemble"],
        "metric_with": with_["ensemble"],
        "metric_delta_points": 100 * (without["ensemble"] - with_["ensemble"]),
    }
    report = {
        "benchmark": "ensemble-distillation", "teacher": args.teacher, "task": args.task, "members": args.members,
        "recipe": args.recipe, "strategy": args.strategy, "seed": args.seed, "distill_terms": distill,
        "threads": env.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "runs": results, "summary": summary,
    }
    print(markdown(results, summary))
    print()
    print(json.dumps(report, indent=2, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

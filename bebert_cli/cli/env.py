"""`bebert env`: what bebert runs on here (paste it into a bug report)."""

from __future__ import annotations

import typer

from bebert_cli.cli import options as opt


def env_command(json_out: opt.JsonOut = False, quiet: opt.Quiet = False):
    """Show versions, CPU features, the kernel backend chosen and why, threads and training precision."""
    from bebert_cli.cli.output import Output
    from bebert_cli.environment import report

    out = Output(json_mode=json_out, quiet=quiet)
    info = report()
    k, t, cpu = info["kernels"], info["threads"], info["cpu"]
    rows = [
        ["bebert", info["bebert"]], ["python", info["python"]], ["platform", info["platform"]],
        *[[name, version or "not installed"] for name, version in info["packages"].items()],
        ["CPU", f"{cpu['model']} ({cpu['arch']})"], ["CPU features", " ".join(cpu["features"]) or "none seen"],
        ["kernel backend", f"{k['backend']} ({k['reason']})"], ["backends available", ", ".join(k["available"])],
        *([["4-bit linears (w1a4)", _lowbit(k["lowbit_kernel"])]] if "lowbit_kernel" in k else []),
        ["OpenMP", {True: "yes", False: "no (single-threaded kernels)"}.get(k.get("openmp"), "n/a")],
        ["fused layers (BiBERT, w1a4, w1a8)", "on" if k["fused_layers"] else "off (BEBERT_FUSED_LAYERS)"],
        ["threads", f"{t['torch_threads']} torch, {t['cpu_count']} CPUs, OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'}"],
        ["OMP_WAIT_POLICY", t["OMP_WAIT_POLICY"]],
        ["one-thread packed forwards", _serial(t["serial_max_tokens"])],
        ["kernels' thread pool", "yes (tried per model and size beside one thread and OpenMP)" if k.get("pool")
         else "no (BEBERT_POOL=0, or no pthreads)"],
        ["mixed precision (auto)", info["mixed_precision_auto"]["reason"]],
    ]
    out.table("bebert env", ["", ""], rows)
    out.result(info, "env")


def _lowbit(choice: dict) -> str:
    names = {"tables": "lookup tables (VPSHUFB)", "dot": "int8 dot products (VPDPBUSD)"}
    if choice["kernel"] is None:
        return choice["why"]
    ms = choice.get("ms")
    timed = f": {', '.join(f'{k} {v:.3f} ms' for k, v in ms.items())}" if ms else ""
    return f"{names[choice['kernel']]} ({choice['why']}{timed})"


def _serial(limit) -> str:
    if limit == "measured":
        return ("measured per model, backend and size (OMP_WAIT_POLICY=passive; BEBERT_SERIAL_MAX_TOKENS fixes a "
                "limit)")
    if isinstance(limit, str):
        return limit
    if not limit:
        return "never (BEBERT_SERIAL_MAX_TOKENS; on by default only with OMP_WAIT_POLICY=passive)"
    return f"up to {limit} tokens (BEBERT_SERIAL_MAX_TOKENS)"


def register(app: typer.Typer) -> None:
    app.command("env", epilog=opt.examples(
        "bebert env",
        "bebert env --json > env.json   # attach to a bug report",
    ))(env_command)

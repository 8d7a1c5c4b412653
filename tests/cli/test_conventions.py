"""The conventions users expect of a CLI (the `hf` and `optimum-cli` ones as models): closed sets as
choices, completion, -h, help with real defaults and examples, one name per concept, -q."""

import inspect
import json
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from bebert_cli.cli import choices
from bebert_cli.cli.main import app
from bebert_cli.quant.recipes import DEFAULT_MAX_SEQ_LENGTH, DEFAULT_RECIPE, PRESETS
from tests.conftest import run_cli

ROOT = typer.main.get_command(app)
COMMANDS = sorted(ROOT.commands)



def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-h"], prog_name="bebert", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_and_option_has_help_text():
    assert {"finetune", "binarize", "ensemble", "eval", "export", "report", "upload", "env", "predict"} <= set(COMMANDS)
    missing = [f"{name} {p.opts[0] if getattr(p, 'opts', None) else p.name}"
               for name in COMMANDS for p in ROOT.commands[name].params if not getattr(p, "help", None)]
    missing += [f"{name} (the command)" for name in COMMANDS if not ROOT.commands[name].help]
    missing += [f"root {p.opts[0]}" for p in ROOT.params if not getattr(p, "help", None)]
    assert missing == []


REQUIRED = {"binarize": ["T", "-o", "O"], "ensemble": ["T", "-o", "O"], "eval": ["P"], "predict": ["P"],
            "export": ["P", "-o", "O"], "finetune": ["M", "-o", "O"]}


@pytest.mark.parametrize("command,flag,values", [
    ("binarize", "--recipe", list(PRESETS)), ("ensemble", "--recipe", list(PRESETS)),
    ("eval", "--runtime", ["packed", "simulated"]), ("predict", "--runtime", ["packed", "simulated"]),
    ("export", "--format", ["packed", "dense", "remote-code"]), ("ensemble", "--strategy", ["adaboost", "bagging"]),
    ("finetune", "--embeddings", ["table", "binary", "hash"]), ("binarize", "--embeddings", ["table", "binary", "hash"]),
    ("binarize", "--mixed-precision", ["auto", "no", "bf16"]), ("ensemble", "--mixed-precision", ["auto", "no", "bf16"]),
    ("binarize", "--attention", ["bi", "softmax"]), ("binarize", "--activation-mode", ["sign", "elastic"]),
    ("binarize", "--fp-dtype", ["float16", "float32"]),
])
def test_closed_sets_are_choices_that_help_lists_and_parsing_enforces(command, flag, values):
    assert f"{flag} <{'|'.join(values)}>" in _help(command)
    result = CliRunner().invoke(app, [command, *REQUIRED[command], flag, "nonsense"], prog_name="bebert")
    assert result.exit_code == 2 and "'nonsense' is not one of" in result.output, result.output


def test_a_value_outside_the_set_is_a_usage_error_before_any_loading(tmp_path):
    proc = run_cli("binarize", tmp_path / "no-teacher", "-o", tmp_path / "o", "--recipe", "w1a3", check=2)
    assert "'w1a3' is not one of" in proc.stderr and "bibert" in proc.stderr and "Traceback" not in proc.stderr


def test_choices_stay_plain_strings_downstream():
    fmt = choices.ExportFormat("remote-code")
    assert fmt == "remote-code" and f"{fmt}" == "remote-code" and str(fmt) == "remote-code"
    assert {"remote-code": 1}[fmt] == 1 and json.dumps({"format": fmt}) == '{"format": "remote-code"}'
    assert fmt.replace("-", "_") == "remote_code"
    from bebert_cli.quant.recipes import resolve_recipe

    rec = resolve_recipe(choices.RecipeName("w1a4"), attention=choices.Attention("softmax"))
    assert rec.to_dict()["attention"] == "softmax" and json.loads(json.dumps(rec.to_dict()))["name"] == "w1a4"


def test_dash_h_on_the_root_and_every_command():
    assert "Commands:" in _help()
    for name in COMMANDS:
        text = _help(name)
        assert text.startswith(f"Usage: bebert {name}") and "-h, --help" in text, name


def test_every_command_shows_examples():
    for name in COMMANDS:
        text = _help(name)
        examples = text[text.index("Examples:"):]
        assert f"bebert {name}" in examples or f"bebert_cli {name}" in examples, name


def test_bare_bebert_prints_the_normal_help_not_an_error_line():
    proc = run_cli()
    assert proc.returncode == 2  # as `hf` does: usage on stderr, exit 2
    assert "Error:" not in proc.stderr and proc.stderr.startswith("Usage: bebert")
    assert "Commands:" in proc.stderr and "\n  binarize " in proc.stderr


def test_shell_completion_is_on_and_completes_the_choices():
    assert "--install-completion" in _help() and "--show-completion" in _help()

    def complete(words: str) -> list[str]:
        cword = len(words.split()) - (0 if words.endswith(" ") else 1)
        env = {**os.environ, "_BEBERT_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        proc = subprocess.run([sys.executable, "-m", "bebert_cli"], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("bebert binarize T --recipe ") == list(PRESETS)
    assert complete("bebert export P -o O --format re") == ["remote-code"]
    assert complete("bebert binarize T --distill logits,h") == ["logits,hidden"]
    assert complete("bebert eval P --task s") == ["sst2", "stsb"] and complete("bebert eval P --split ma") == ["matched"]


def test_help_shows_the_recipe_presets_defaults():
    text = " ".join(_help("binarize").split())
    lrs = ", ".join(f"{name} {format(r.lr, '.0e').replace('e-0', 'e-')}" for name, r in PRESETS.items())
    assert f"[default: (per recipe: {lrs});" in text  # --lr
    assert f"[default: ({PRESETS['bibert'].epochs:g} in every recipe);" in text  # --epochs
    assert f"[default: ({DEFAULT_MAX_SEQ_LENGTH} in every recipe);" in text  # --max-seq-length
    assert f"[default: {DEFAULT_RECIPE}]" in text
    ensemble = " ".join(_help("ensemble").split())
    assert f"[default: ({DEFAULT_RECIPE})]" in ensemble and "[default: (adaboost)]" in ensemble


def test_one_default_sequence_length_for_the_whole_pipeline():
    """finetune, binarize (every preset) and ensemble make checkpoints at one L, so `report` on a
    default pipeline compares like with like and does not warn about mixed lengths."""
    from bebert_cli.cli.finetune import finetune_command

    assert inspect.signature(finetune_command).parameters["max_seq_length"].default == DEFAULT_MAX_SEQ_LENGTH
    assert {r.max_seq_length for r in PRESETS.values()} == {DEFAULT_MAX_SEQ_LENGTH}


def test_binarize_and_ensemble_default_to_the_same_recipe():
    from bebert_cli.cli.binarize import binarize_command

    assert inspect.signature(binarize_command).parameters["recipe"].default == DEFAULT_RECIPE
    assert DEFAULT_RECIPE in PRESETS and PRESETS[DEFAULT_RECIPE].activation_bits > 1  # learns in the demo's budget


def test_quiet_silences_warnings_python_warnings_and_library_logs_but_not_errors():
    script = """
import logging, sys, warnings
from bebert_cli.cli.output import Output
loud = Output()
loud.warn("one")
quiet = Output(quiet=True)
quiet.warn("two")
warnings.warn("three")
logging.getLogger("transformers.modeling_utils").warning("four")
logging.getLogger("datasets.builder").warning("five")
import transformers
transformers.logging.get_logger("transformers.x").warning("six")
logging.getLogger("transformers.modeling_utils").error("seven")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Warning: one" in proc.stderr
    for word in ("two", "three", "four", "five", "six"):
        assert word not in proc.stderr, (word, proc.stderr)
    assert "seven" in proc.stderr  # errors still print


def test_quiet_commands_still_print_their_error_line(tmp_path):
    proc = run_cli("eval", tmp_path / "missing", "-q", check=1)
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: ")

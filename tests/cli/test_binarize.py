import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import error_line, one_json, run_cli

FAST = ["--max-train-samples", "64", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "32"]


# bit differs from bibert only in its quantizer settings (covered by tests/quant); its CLI run is slow-only
@pytest.mark.parametrize("recipe", ["bibert", pytest.param("bit", marks=pytest.mark.slow), "w1a4", "w1a8"])
def test_each_recipe_end_to_end(tiny_bert, small_glue, tmp_path, recipe):
    out = tmp_path / recipe
    payload = one_json(run_cli("binarize", tiny_bert, "--task", "sst2", "-o", out, "--recipe", recipe,
                               "--data-dir", small_glue, *FAST, "--json", check=0).stdout)
    assert payload["recipe"] == recipe and payload["teacher_evaluation"]["main_metric"] == "accuracy"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "recipe.json", "eval_results.json", "bebert_run.json", "vocab.txt",
            "tokenizer_config.json"} <= names
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bebert" and qc["recipe"]["name"] == recipe
    assert json.loads((out / "recipe.json").read_text()) == qc["recipe"]
    # The saved checkpoint evaluates to exactly what the in-memory student scored.
    again = one_json(run_cli("eval", out, "--task", "sst2", "--data-dir", small_glue, "--json", check=0).stdout)
    assert again["splits"] == payload["splits"]


def test_overrides_are_recorded(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "custom"
    run_cli("binarize", tiny_bert, "--task", "sst2", "-o", out, "--recipe", "bibert", "--distill", "logits",
            "--embedding-bits", "32", "--lr", "0.001", "--seed", "3", "--data-dir", small_glue, *FAST, check=0)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["distill"] == ["logits"] and recipe["embeddings"] == "table" and recipe["lr"] == 0.001
    assert recipe["seed"] == 3 and recipe["max_train_samples"] == 64


def test_bad_recipe_options_are_usage_errors(tiny_bert, small_glue, tmp_path):
    line = error_line(run_cli("binarize", tiny_bert, "--task", "sst2", "-o", tmp_path / "x", "--recipe", "bibert",
                              "--attention", "bi", "--activation-bits", "4", check=2).stderr)
    assert "needs 1-bit activations" in line
    assert "'nope' is not one of 'bibert', 'bit', 'w1a4', 'w1a8'" in error_line(run_cli(
        "binarize", tiny_bert, "--task", "sst2", "-o", tmp_path / "x", "--recipe", "nope", check=2).stderr)
    assert not (tmp_path / "x").exists()


def test_unsupported_architecture(tmp_path, small_glue):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model("gpt2", n_layer=1, n_head=2, n_embd=16, vocab_size=50, num_labels=2)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(tmp_path / "gpt2")
    line = error_line(run_cli("binarize", tmp_path / "gpt2", "--task", "sst2", "-o", tmp_path / "o", "--data-dir",
                              small_glue, check=1).stderr)
    assert "bebert supports bert, roberta, electra, distilbert" in line


def test_other_architectures(tmp_path, small_glue, tokenizer):
    from tests.conftest import make_tiny

    for mt in ("roberta", "electra", "distilbert"):
        teacher = make_tiny(tmp_path / mt, model_type=mt, tokenizer=tokenizer)
        run_cli("binarize", teacher, "--task", "sst2", "-o", tmp_path / f"{mt}-bin", "--data-dir", small_glue,
                "--max-train-samples", "32", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16", check=0)


LONG = ["--max-train-samples", "96", "--epochs", "12", "--batch-size", "8", "--max-seq-length", "16", "--save-every", "3",
        "--seed", "5"]


def interrupt_once_saved(base: list, out, state) -> None:
    """Run `bebert BASE -o OUT` in a new interpreter, Ctrl-C it once `state` exists, and check it stopped with 130."""
    proc = subprocess.Popen([sys.executable, "-m", "bebert_cli", *base, "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not state.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.fail("training finished before it could be interrupted; make the run longer")
    assert proc.returncode == 130, err


def test_resume_after_interrupt_gives_the_same_model(tiny_bert, small_glue, tmp_path):
    base = ["binarize", str(tiny_bert), "--task", "sst2", "--data-dir", str(small_glue), *LONG]
    run_cli(*base, "-o", tmp_path / "straight", check=0)

    out = tmp_path / "interrupted"
    interrupt_once_saved(base, out, tmp_path / ".interrupted.bebert-run" / "train_state.safetensors")
    assert not out.exists()
    run_cli(*base, "-o", out, "--resume", check=0)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)  # bit-identical tensors
    assert not (tmp_path / ".interrupted.bebert-run").exists()


def test_two_process_torchrun(tiny_bert, small_glue, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = tmp_path / "dist"
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "bebert_cli", "binarize", str(tiny_bert), "--task",
                           "sst2", "-o", str(out), "--data-dir", str(small_glue), *FAST, "--json"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    payload = one_json(proc.stdout)  # one process writes, one JSON object
    run = json.loads((out / "bebert_run.json").read_text())
    assert run["processes"] == 2 and payload["output"] == str(out)


def test_multi_step_distillation_records_the_chain(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "chain"
    payload = one_json(run_cli("binarize", tiny_bert, "--task", "sst2", "-o", out, "--recipe", "bit", "--stages",
                               "w1a4,w1a2,w1a1", "--data-dir", small_glue, *FAST, "--json", check=0).stdout)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["stages"] == ["w1a4", "w1a2", "w1a1"] and recipe["activation_bits"] == 1
    run = json.loads((out / "bebert_run.json").read_text())
    assert [s["stage"] for s in run["stages"]] == ["w1a4", "w1a2", "w1a1"]
    assert [s["teacher"] for s in run["stages"]] == ["teacher", "bit-stage1-w1a4", "bit-stage2-w1a2"]
    again = one_json(run_cli("eval", out, "--task", "sst2", "--data-dir", small_glue, "--json", check=0).stdout)
    assert again["splits"] == payload["splits"]
    line = error_line(run_cli("binarize", tiny_bert, "--task", "sst2", "-o", tmp_path / "bad", "--recipe", "bit",
                              "--stages", "w1a4,w1a2", "--data-dir", small_glue, *FAST, check=2).stderr)
    assert "ending with this recipe's own w1a1" in line


@pytest.mark.slow  # over 15 s; moved out of the default suite to keep it under 15 minutes
def test_multi_step_resume_continues_the_interrupted_stage(tiny_bert, small_glue, tmp_path):
    base = ["binarize", str(tiny_bert), "--task", "sst2", "--data-dir", str(small_glue), "--recipe", "bit", "--stages",
            "w1a2,w1a1", *LONG]
    run_cli(*base, "-o", tmp_path / "straight", check=0)
    out = tmp_path / "interrupted"
    interrupt_once_saved(base, out, tmp_path / ".interrupted.bebert-run" / "stage-2-w1a1" / "train_state.safetensors")
    resumed = run_cli(*base, "-o", out, "--resume", check=0)
    assert "stage 1/2 (w1a2) already finished" in resumed.stderr
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_augmentation_trains_on_copies_and_is_recorded(tiny_bert, small_glue, tmp_path):
    out = tmp_path / "aug"
    run_cli("binarize", tiny_bert, "--task", "sst2", "-o", out, "--recipe", "w1a4", "--augment", "2",
            "--augment-top-k", "5", "--data-dir", small_glue, *FAST, check=0)
    recipe = json.loads((out / "recipe.json").read_text())
    assert (recipe["augment"], recipe["augment_top_k"], recipe["augment_prob"]) == (2, 5, 0.4)
    run = json.loads((out / "bebert_run.json").read_text())
    assert run["train_rows"] == 3 * (64 - 3)  # 3 rows of the 64 are held out for model selection

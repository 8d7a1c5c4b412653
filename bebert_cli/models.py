"""Loading full-precision Hugging Face checkpoints and checking they are ones bebert supports."""

from __future__ import annotations

import os
from pathlib import Path

from bebert_cli.errors import ModelError
from bebert_cli.families import SUPPORTED_MODEL_TYPES
from bebert_cli.tasks import GlueTask


def _looks_like_path(name: str) -> bool:
    from bebert_cli.hub import looks_like_path

    return looks_like_path(name)


def quiet_transformers() -> None:
    """transformers' own tqdm bars ("Loading weights") would mix with ours and with --json."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_config(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    """AutoConfig for a local directory or hub id, with clear errors for non-models."""
    from transformers import AutoConfig

    quiet_transformers()

    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{name_or_path} is a file, not a model directory")
        if not (path / "config.json").is_file():
            raise ModelError(f"{name_or_path} is not a model directory (no config.json)")
        source = str(path)
    elif _looks_like_path(name_or_path):
        raise ModelError(f"model directory {name_or_path} does not exist")
    else:
        from bebert_cli.hub import check_reachable

        check_reachable("model", name_or_path, ModelError)  # seconds, not a minute of retries, without a network
        source = name_or_path  # a hub id: needs a network (or HF_HUB_OFFLINE=1 and the cache)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise ModelError(f"cannot load a model config from {name_or_path}: {str(exc).splitlines()[0][:200]}") from exc
    check_supported(config, name_or_path)
    return config


def check_supported(config, name: str) -> None:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"{name} is a {config.model_type!r} model; bebert supports {', '.join(SUPPORTED_MODEL_TYPES)} "
            "(BERT-family) sequence-classification models"
        )


def check_task_matches(config, task: GlueTask, name: str) -> None:
    """A classifier trained for another label set must not be evaluated as if it matched."""
    if config.num_labels != task.num_labels:
        raise ModelError(
            f"{name} has {config.num_labels} output label(s) but task {task.name} needs {task.num_labels}"
        )


def _check_shapes_before_loading(name_or_path: str, config, task: GlueTask) -> None:
    """Compare config.json with the weights' header on the meta device (no memory) before loading.

    A fresh head is created with `ignore_mismatched_sizes=True`, which would also silently
    re-initialise (and allocate) any body tensor that config.json misdescribes, e.g. a claimed
    400M-row vocabulary. Only the classification head may differ.
    """
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.quant.safetensors_check import read_header

    weights = Path(name_or_path).expanduser() / "model.safetensors"
    if not weights.is_file():
        return  # a hub id or sharded checkpoint: transformers checks those itself
    header = read_header(weights)
    cfg = copy.deepcopy(config)
    cfg.num_labels = task.num_labels
    with torch.device("meta"):
        skeleton = AutoModelForSequenceClassification.from_config(cfg)
    prefix = f"{skeleton.base_model_prefix}."
    for name, tensor in skeleton.state_dict().items():
        if "classifier" in name:
            continue
        stored = header.get(name) or header.get(name[len(prefix):] if name.startswith(prefix) else name)
        if stored is not None and stored["shape"] != list(tensor.shape):
            hint = " (config.json's vocab_size does not match the stored vocabulary)" if "word_embeddings" in name else ""
            raise ModelError(f"{name_or_path}: tensor {name} is stored as {stored['shape']} but config.json "
                             f"describes {list(tensor.shape)}{hint}")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except Exception as exc:
        raise ModelError(f"cannot load a tokenizer from {name_or_path}: {str(exc).splitlines()[0][:200]}") from exc


def load_classifier(name_or_path: str, task: GlueTask, *, new_head: bool, trust_remote_code: bool = False,
                    revision: str | None = None):
    """A sequence-classification model for `task`.

    new_head=True (finetune): any BERT-family checkpoint; a head of the task's size is created if the
    checkpoint has none or a different one. new_head=False (eval, teacher): the head must match.
    """
    from transformers import AutoModelForSequenceClassification

    config = load_config(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    qc = getattr(config, "quantization_config", None)
    if (qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)) == "bebert":
        # It would load (bebert registers a transformers quantizer), but a binary model is no teacher
        # and no starting point for fine-tuning: its latent full-precision weights are gone.
        raise ModelError(f"{name_or_path} is a bebert packed (binary) checkpoint; "
                         "fine-tuning and distillation need the full-precision checkpoint it came from")
    kwargs = {}
    if new_head:
        kwargs = dict(
            num_labels=task.num_labels,
            id2label=dict(enumerate(task.labels)) if task.labels else {0: "score"},
            label2id={n: i for i, n in enumerate(task.labels)} if task.labels else {"score": 0},
            problem_type="regression" if task.is_regression else "single_label_classification",
            ignore_mismatched_sizes=True,
        )
    else:
        check_task_matches(config, task, name_or_path)
    if new_head:
        _check_shapes_before_loading(name_or_path, config, task)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, use_safetensors=True, revision=revision, **kwargs
        )
    except Exception as exc:
        raise ModelError(f"cannot load {name_or_path} as a sequence classifier: {str(exc).splitlines()[0][:200]}") from exc
    if task.is_regression:
        model.config.problem_type = "regression"
    return model


_TOKENIZER_CONFIG_KEYS = ("tokenizer_class", "do_lower_case", "model_max_length", "strip_accents", "tokenize_chinese_chars",
                          "do_basic_tokenize", "cls_token", "sep_token", "pad_token", "unk_token", "mask_token")


def save_tokenizer_compact(tokenizer, out_dir, check_texts: list[str]) -> None:
    """Save a WordPiece (BERT-style) tokenizer as vocab.txt + tokenizer_config.json only.

    tokenizer.json is ~3x larger than vocab.txt and would be a large share of a packed 1-bit
    checkpoint. The compact form is used only if it tokenizes `check_texts` identically;
    otherwise the tokenizer is saved in full.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    compact_ok = type(tokenizer).__name__ in ("BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer",
                                              "ElectraTokenizer") and [vocab[t] for t in tokens] == list(range(len(tokens)))
    if compact_ok:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
            init = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items() if k in _TOKENIZER_CONFIG_KEYS}
            init.update(tokenizer_class=type(tokenizer).__name__.replace("Fast", ""),
                        model_max_length=tokenizer.model_max_length,
                        do_lower_case=getattr(tokenizer, "do_lower_case", init.get("do_lower_case", True)))
            for special in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token"):
                value = getattr(tokenizer, special, None)
                if value is not None:
                    init[special] = str(value)
            (tmp / "tokenizer_config.json").write_text(json.dumps(init, indent=2, sort_keys=True) + "\n")
            try:
                reloaded = AutoTokenizer.from_pretrained(str(tmp))
                texts = check_texts[:2000] or ["a"]
                compact_ok = reloaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
            except Exception:
                compact_ok = False
            if compact_ok:
                for f in tmp.iterdir():
                    shutil.copy(f, out_dir / f.name)
                return
    tokenizer.save_pretrained(str(out_dir))

"""Counted parameters, bytes and FLOPs against hand-computed values for a tiny BERT (make_tiny's shape:
hidden 32, 2 layers, FFN 64, 128 positions, 2 labels, the test tokenizer's vocabulary)."""

import json
import math
import os
import shutil
import struct

import pytest

from bebert_cli.errors import CheckpointError, ModelError
from bebert_cli.report import build_report, count_checkpoint, count_flops, summarize
from bebert_cli.report.counting import count_parts

H, FFN, LAYERS, POS, LABELS = 32, 64, 2, 128, 2
L = 16


def packed_from(fp_dir, out, recipe="bibert", *, task="sst2", accuracy=0.81, tokenizer=None, **overrides):
    """A packed checkpoint made in-process from a full-precision one (no training: the report only counts)."""
    from transformers import AutoModelForSequenceClassification

    from bebert_cli.quant.convert import quantize_
    from bebert_cli.quant.packed import round_full_precision_, save_packed
    from bebert_cli.quant.recipes import resolve_recipe

    model = AutoModelForSequenceClassification.from_pretrained(fp_dir)
    rec = resolve_recipe(recipe, **overrides)
    vocab = None
    if rec.embeddings == "hash":
        from bebert_cli.quant.hash_embedding import tokens_from_vocab

        vocab = tokens_from_vocab(tokenizer.get_vocab())
    plan = quantize_(model, rec, vocab=vocab)
    model.eval()
    round_full_precision_(model, rec.fp_dtype)
    out.mkdir(parents=True)
    save_packed(model, out, rec, plan)
    write_eval(out, task, accuracy)
    (out / "bebert_run.json").write_text(json.dumps({"command": "binarize", "teacher": str(fp_dir), "task": task,
                                                     "max_seq_length": L, "recipe": rec.to_dict()}))
    return out


def write_eval(path, task, accuracy):
    (path / "eval_results.json").write_text(json.dumps({
        "task": task, "main_metric": "accuracy", "main_value": accuracy,
        "splits": {"validation": {"metrics": {"accuracy": accuracy}, "samples": 120}}}))


def make_ensemble(member, root, *, weights=(0.6, 0.4), accuracy=0.83):
    root.mkdir(parents=True)
    for i in range(len(weights)):
        shutil.copytree(member, root / f"member-{i}")
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # root files count too
    (root / "ensemble.json").write_text(json.dumps({
        "format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2, "strategy": "bagging",
        "combination": "weighted_logits",
        "members": [{"path": f"member-{i}", "weight": w, "recipe": "bibert"} for i, w in enumerate(weights)]}))
    write_eval(root, "sst2", accuracy)
    return root


def files_size(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs if f != "README.md")


@pytest.fixture(scope="module")
def vocab(tiny_bert):
    return json.loads((tiny_bert / "config.json").read_text())["vocab_size"]


@pytest.fixture(scope="module")
def packed(tiny_bert, tmp_path_factory):
    return packed_from(tiny_bert, tmp_path_factory.mktemp("report") / "bibert")


def fp32_params(v):
    per_layer = 4 * (H * H + H) + 2 * H + (H * FFN + FFN) + (FFN * H + H) + 2 * H
    return v * H + POS * H + 2 * H + 2 * H + LAYERS * per_layer + (H * H + H) + (H * LABELS + LABELS)


def test_fp32_counts(tiny_bert, vocab):
    from transformers import AutoModelForSequenceClassification

    c = count_checkpoint(tiny_bert)
    expected = fp32_params(vocab)
    assert c.kind == "fp" and c.bits_label == "fp32"
    assert c.params["fp32"] == c.total_params == expected
    assert expected == AutoModelForSequenceClassification.from_pretrained(tiny_bert).num_parameters()
    assert c.params["1bit"] == c.params["fp16"] == c.params["scales"] == 0
    assert c.tensor_bytes["fp32"] == 4 * expected
    assert c.weights_bytes == (tiny_bert / "model.safetensors").stat().st_size
    assert c.disk_bytes == files_size(tiny_bert)
    f = count_flops(c, L)
    # per layer: 4 HxH + 2 HxFFN linears on L tokens, QK^T and AV; pooler and classifier on [CLS]
    hand = LAYERS * (2 * L * (4 * H * H + 2 * H * FFN) + 2 * 2 * L * L * H) + 2 * H * H + 2 * H * LABELS
    assert hand == 592_000
    assert (f.flops, f.binary_ops, f.flop_equivalent) == (hand, 0, hand)


def test_packed_1_1_1_counts(packed, vocab):
    c = count_checkpoint(packed)
    assert c.kind == "packed" and c.bits_label == "1-1-1" and c.recipe == "bibert"
    one_bit = vocab * H + LAYERS * (4 * H * H + 2 * H * FFN) + H * H
    scales = vocab + LAYERS * (4 * H + FFN + H) + H
    fp16 = POS * H + 2 * H + 2 * H + LAYERS * ((4 * H + FFN + H) + 4 * H) + H + (H * LABELS + LABELS)
    assert c.params["1bit"] == one_bit
    assert c.params["scales"] == scales
    assert c.params["fp16"] == fp16
    assert c.params["fp32"] == 0  # BiBERT's sign() activations have no parameters
    assert c.total_params == one_bit + fp16 == fp32_params(vocab)
    row = lambda k: math.ceil(k / 8)  # noqa: E731
    assert c.tensor_bytes["1bit"] == vocab * row(H) + LAYERS * (4 * H * row(H) + FFN * row(H) + H * row(FFN)) + H * row(H)
    assert c.tensor_bytes["scales"] == 2 * scales and c.tensor_bytes["fp16"] == 2 * fp16
    f = packed / "model.safetensors"
    (header_len,) = struct.unpack("<Q", f.read_bytes()[:8])
    assert c.weights_bytes == f.stat().st_size == 8 + header_len + sum(c.tensor_bytes.values())
    assert c.disk_bytes == files_size(packed)
    fl = count_flops(c, L)
    assert fl.flops == 2 * H * LABELS  # the classifier stays full precision
    assert fl.binary_ops == 592_000 - 2 * H * LABELS  # everything else: 2 binary ops per 1-bit x 1-bit MAC
    assert fl.flop_equivalent == 128 + 591_872 / 64 == 9376


def test_ensemble_of_two_counts_every_member(packed, tmp_path):
    ens = make_ensemble(packed, tmp_path / "ens")
    c = count_checkpoint(ens)
    m = count_checkpoint(packed)
    assert c.kind == "ensemble" and c.bits_label == "1-1-1 x2" and len(c.members) == 2
    assert c.params == {k: 2 * v for k, v in m.params.items()}
    assert c.weights_bytes == 2 * m.weights_bytes
    assert c.disk_bytes == files_size(ens) == 2 * m.disk_bytes + sum(
        (ens / f).stat().st_size for f in ("vocab.txt", "ensemble.json", "eval_results.json"))
    assert count_flops(c, L).flop_equivalent == 2 * 9376
    assert {x.name.split("/")[0] for x in c.modules} == {"member-0", "member-1"}
    s = summarize(c, L)
    assert s["members"] == 2 and s["metrics"]["main_value"] == 0.83


def test_w1a4_counts_bit_weighted_binary_ops(tiny_bert, tmp_path, vocab):
    c = count_checkpoint(packed_from(tiny_bert, tmp_path / "w1a4", "w1a4"))
    assert c.bits_label == "1-1-4"
    quantizers = LAYERS * (6 + 4) + 1  # an LSQ step per binary linear and per attention operand (q, k, v, p)
    assert c.params["fp32"] == quantizers and c.tensor_bytes["buffers"] == quantizers  # + one uint8 flag each
    f = count_flops(c, L)
    linear_macs = LAYERS * L * (4 * H * H + 2 * H * FFN) + H * H
    attention_macs = LAYERS * 2 * L * L * H
    assert f.binary_ops == 2 * linear_macs * 4 + 2 * attention_macs * 4 * 4
    assert f.flops == 2 * H * LABELS


def test_hashed_embeddings_are_on_the_fly_and_zero_bytes(tiny_bert, tmp_path, tokenizer, vocab):
    d = packed_from(tiny_bert, tmp_path / "hash", "bibert", embeddings="hash", tokenizer=tokenizer)
    c = count_checkpoint(d)
    assert c.bits_label == "1-h-1"
    assert c.params["on_the_fly"] == vocab * H and c.tensor_bytes["on_the_fly"] == 0
    row = next(m for m in c.modules if m.name == "bert.embeddings.word_embeddings")
    assert row.kind == "hashed embedding" and row.bytes == 0 and row.precision == "on-the-fly"
    assert c.params["1bit"] == LAYERS * (4 * H * H + 2 * H * FFN) + H * H


def test_by_module_kinds_and_reasons(packed):
    rows = {m["name"]: m for m in summarize(count_checkpoint(packed), L, by_module=True)["modules"]}
    q = rows["bert.encoder.layer.0.attention.self.query"]
    assert q["kind"] == "binary linear" and q["params"] == H * H + H and q["bytes"] == H * 4 + 2 * H + 2 * H
    assert rows["bert.embeddings.word_embeddings"]["kind"] == "binary embedding"
    assert rows["classifier"]["kind"] == "fp linear" and rows["classifier"]["reason"].startswith("classifier head")
    assert rows["bert.embeddings.position_embeddings"]["reason"].startswith("position embeddings")
    assert rows["bert.encoder.layer.1.output.LayerNorm"]["kind"] == "LayerNorm"


def bert_base_header(packed: bool):
    """config.json + safetensors header of a BERT-base classifier (no file: count_parts is pure)."""
    h, layers, ffn, vocab = 768, 12, 3072, 30522
    header, binary = {}, []
    dt = "F16" if packed else "F32"

    def t(name, dtype, shape):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]}

    def linear(name, i, o, binarize):
        if binarize:
            t(f"{name}.weight_packed", "U8", [o, (i + 7) // 8])
            t(f"{name}.weight_scale", "F16", [o])
            binary.append(name)
        else:
            t(f"{name}.weight", dt, [o, i])
        t(f"{name}.bias", dt, [o])

    if packed:
        t("bert.embeddings.word_embeddings.weight_packed", "U8", [vocab, h // 8])
        t("bert.embeddings.word_embeddings.weight_scale", "F16", [vocab])
    else:
        t("bert.embeddings.word_embeddings.weight", dt, [vocab, h])
    t("bert.embeddings.position_embeddings.weight", dt, [512, h])
    t("bert.embeddings.token_type_embeddings.weight", dt, [2, h])
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        for name, a, b in (("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h),
                           ("attention.output.dense", h, h), ("intermediate.dense", h, ffn), ("output.dense", ffn, h)):
            linear(p + name, a, b, packed)
    linear("bert.pooler.dense", h, h, packed)
    linear("classifier", h, 2, False)
    cfg = {"model_type": "bert", "hidden_size": h, "num_hidden_layers": layers, "intermediate_size": ffn, "vocab_size": vocab}
    if packed:
        cfg["quantization_config"] = {
            "quant_method": "bebert", "bits": {"weights": 1, "embeddings": 1, "activations": 1}, "bits_label": "1-1-1",
            "attention": "bi", "binary_modules": binary, "binary_embeddings": ["bert.embeddings.word_embeddings"],
            "hashed_embeddings": [], "full_precision_modules": {}}
    return cfg, header


def test_bert_base_shape_matches_the_papers():
    class C:
        pass

    for packed, low, high in ((False, 22.2e9, 22.6e9), (True, 0.30e9, 0.45e9)):  # BiBERT: 22.5 G and 0.4 G
        cfg, header = bert_base_header(packed)
        c = C()
        _, _, _, c.linears, c.attention = count_parts(cfg, header)
        assert low < count_flops(c, 128).flop_equivalent < high
    cfg, header = bert_base_header(False)
    c.linears, c.attention = count_parts(cfg, header)[3:]
    assert count_flops(c, 128).flops == 22_348_434_432


def test_report_ratios_and_task_filter(tiny_bert, packed, tmp_path):
    base = tmp_path / "teacher"
    shutil.copytree(tiny_bert, base)
    write_eval(base, "sst2", 0.85)
    r = build_report([packed], baseline=base, seq_len=L)
    vs = r["models"][0]["vs_baseline"]
    assert vs["size_ratio"] == pytest.approx((base / "model.safetensors").stat().st_size
                                             / (packed / "model.safetensors").stat().st_size)
    assert vs["flop_ratio"] == pytest.approx(592_000 / 9376)
    assert vs["metric_delta_points"] == pytest.approx(-4.0)
    other = build_report([packed], baseline=base, seq_len=L, task="mrpc")
    assert other["models"][0]["metrics"] is None and "not mrpc" in other["models"][0]["notes"][0]
    assert other["models"][0]["vs_baseline"]["metric_delta_points"] is None
    assert build_report([packed])["seq_len"] == L  # the checkpoint's max_seq_length


def test_bad_inputs(tmp_path, packed):
    with pytest.raises(ModelError, match="not a model directory"):
        count_checkpoint(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        count_checkpoint(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(packed, broken)
    f = broken / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        count_checkpoint(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        count_checkpoint(broken)
    ens = make_ensemble(packed, tmp_path / "ens")
    manifest = json.loads((ens / "ensemble.json").read_text())
    manifest["members"][1]["path"] = "../broken"
    (ens / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"must not contain '\.\.'"):  # format.read_manifest's wording
        count_checkpoint(ens)

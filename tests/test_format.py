"""bebert_cli/format.py: reading what a directory is, the quantization_config validator, the keep-own-dtype
rule, and the one ensemble.json validator that loading and the report share."""

import json
import subprocess
import sys

import pytest

from bebert_cli import format as fmt
from bebert_cli.errors import CheckpointError, ModelError


def member(path, *, labels=2, task="sst2"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": labels,
                                                   "quantization_config": {"quant_method": "bebert"}}))
    (path / "eval_results.json").write_text(json.dumps({"task": task}))
    return path


def ensemble(root, **manifest):
    for k in range(2):
        member(root / f"member-{k}")
    m = {"format": "bebert-ensemble", "format_version": 1, "task": "sst2", "num_labels": 2, "strategy": "bagging",
         "combination": "weighted_logits",
         "members": [{"path": f"member-{k}", "weight": 1.0, "recipe": "bibert"} for k in range(2)], **manifest}
    (root / "ensemble.json").write_text(json.dumps(m))
    return root


def test_format_is_torch_free():
    code = "import sys, bebert_cli.format, bebert_cli.families; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_describe_checkpoint_says_what_a_directory_is(tmp_path):
    fp = tmp_path / "fp"
    fp.mkdir()
    (fp / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert fmt.describe_checkpoint(fp) == ("fp", {"model_type": "bert"})
    packed = member(tmp_path / "packed")
    kind, config = fmt.describe_checkpoint(packed)
    assert kind == "packed" and config["quantization_config"]["quant_method"] == "bebert"
    assert fmt.checkpoint_kind(ensemble(tmp_path / "ens")) == "ensemble"
    with pytest.raises(ModelError, match="does not exist"):
        fmt.checkpoint_kind(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        fmt.checkpoint_kind(tmp_path / "file")
    (fp / "config.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="JSON object"):
        fmt.read_config_json(fp)


def test_quant_config_validator(tmp_path):
    from bebert_cli.quant.recipes import resolve_recipe

    good = {"format_version": 1, "bit_order": "little", "pack_dtype": "uint8", "recipe": resolve_recipe("bibert").to_dict(),
            "binary_modules": ["a"], "binary_embeddings": [], "hashed_embeddings": []}
    assert fmt.validate_quant_config(good, "X").name == "bibert"
    for bad, message in [({"format_version": fmt.PACKED_FORMAT_VERSION + 1}, "upgrade bebert"), ({"format_version": True}, "must be an integer"),
                         ({"bit_order": "big"}, "bit order"), ({"recipe": {"weight_bits": 3}}, "invalid recipe"),
                         ({"binary_modules": "a"}, "list of module names")]:
        with pytest.raises(CheckpointError, match=message):
            fmt.validate_quant_config({**good, **bad}, "X")


def test_keep_own_dtype_rule():
    assert fmt.keeps_own_dtype("bert.encoder.layer.0.attention.self.query.weight_scale", is_float=True)
    assert fmt.keeps_own_dtype("bert.encoder.layer.0.attention.self.query.act_quant.alpha", is_float=True)
    assert fmt.keeps_own_dtype("bert.encoder.layer.0.attention.self.bebert_attn.q_quant.step", is_float=True)
    assert fmt.keeps_own_dtype("bert.encoder.layer.0.attention.self.query.weight_packed", is_float=False)
    assert not fmt.keeps_own_dtype("bert.embeddings.LayerNorm.weight", is_float=True)
    assert not fmt.keeps_own_dtype("classifier.bias", is_float=True)
    assert not fmt.keeps_own_dtype("bert.act_quant_like.weight", is_float=True)  # a name, not a quantizer module


def test_a_valid_manifest_is_read_with_its_member_directories(tmp_path):
    root = ensemble(tmp_path / "ens")
    manifest, dirs, configs = fmt.read_manifest(root)
    assert manifest["task"] == "sst2" and dirs == [root / "member-0", root / "member-1"]
    assert [c["quantization_config"] for c in configs] == [{"quant_method": "bebert"}] * 2


# Files the two validators of old disagreed on: the report's accepted the first two (it did not check
# tasks or members' configs), ensemble/model.py's accepted the last (it did not look for nested ensembles).
DISAGREED = {
    "members of another task": (lambda root: ensemble(root, task="nope"), "was trained for task sst2"),
    "member not packed": (lambda root: (ensemble(root), (root / "member-1" / "config.json").write_text("{}")),
                          "not a packed bebert checkpoint"),
    "nested ensemble": (lambda root: (ensemble(root), (root / "member-1" / "ensemble.json").write_text("{}")),
                        "is itself an ensemble"),
}


@pytest.mark.parametrize("case", list(DISAGREED))
def test_loading_and_the_report_refuse_the_same_manifests_with_the_same_error(tmp_path, case):
    import bebert_cli
    from bebert_cli.report import count_checkpoint

    make, message = DISAGREED[case]
    root = tmp_path / "ens"
    make(root)
    errors = []
    for read in (bebert_cli.load_model, count_checkpoint):
        with pytest.raises(CheckpointError, match=message) as info:
            read(root)
        errors.append(str(info.value))
    assert errors[0] == errors[1]

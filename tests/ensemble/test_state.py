"""The resumable ensemble state (ensemble/train.py): what a resumed run accepts."""

import json

import pytest

from bebert_cli.ensemble.train import PACKED_SUBDIR, STATE_FILE, STATE_VERSION, load_state
from bebert_cli.errors import TrainingError

FINGERPRINT = {"recipe": "w1a4", "members": 2, "seed": 1}


def _write(work, members):
    (work / "member-0" / PACKED_SUBDIR).mkdir(parents=True)
    (work / "member-0" / PACKED_SUBDIR / "model.safetensors").write_bytes(b"x")
    state = {"version": STATE_VERSION, "fingerprint": FINGERPRINT, "sample_weights": [0.25] * 4, "members": members}
    (work / STATE_FILE).write_text(json.dumps(state))


def test_member_records_saved_before_schema_2_are_read(tmp_path):
    _write(tmp_path, [{"path": "member-0", "weight": 0.5, "dev": {"accuracy": 0.81}}])
    state = load_state(tmp_path, FINGERPRINT, 4, resume=True, members=2)
    assert state["members"] == [{"path": "member-0", "weight": 0.5, "main_value": 0.81}]


def test_a_state_from_other_settings_is_refused(tmp_path):
    _write(tmp_path, [{"path": "member-0", "weight": 0.5, "main_value": 0.81}])
    with pytest.raises(TrainingError, match="different settings"):
        load_state(tmp_path, {**FINGERPRINT, "seed": 2}, 4, resume=True, members=2)

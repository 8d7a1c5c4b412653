import pytest

from bebert_cli.data import load_split, read_glue_tsv, resolve_data_dir, subsample, tokenize
from bebert_cli.errors import DataError
from bebert_cli.tasks import get_task


@pytest.mark.parametrize("task,split,rows", [
    ("sst2", "validation", 872), ("cola", "validation", 1043), ("mrpc", "validation", 408),
    ("rte", "validation", 277), ("stsb", "validation", 1500), ("qnli", "validation", 5463),
    ("cola", "train", 8551), ("mrpc", "train", 3668),
])
def test_real_glue_files_load_completely(glue_dir, task, split, rows):
    t = get_task(task)
    ds = load_split(t, split, glue_dir)
    assert len(ds) == rows
    assert set(ds.column_names) == {*t.text_fields, "label"}
    labels = ds["label"]
    if t.is_regression:
        assert all(0.0 <= x <= 5.0 for x in labels)
    else:
        assert set(labels) <= set(range(t.num_labels)) and len(set(labels)) == t.num_labels


def test_mrpc_bom_and_unbalanced_quotes(glue_dir):
    ds = load_split(get_task("mrpc"), "validation", glue_dir)
    # The first dev row's second sentence starts with an unbalanced double quote.
    assert ds[0]["sentence2"].startswith('"The foodservice pie business')
    assert ds[0]["label"] == 1


def test_cola_has_no_header(glue_dir):
    ds = load_split(get_task("cola"), "validation", glue_dir)
    assert ds[0]["sentence"] == "The sailors rode the breeze clear of the rocks."


def test_text_labels_map_to_ids(glue_dir):
    ds = load_split(get_task("rte"), "validation", glue_dir)
    assert set(ds["label"]) == {0, 1}


def _write(tmp_path, task_dir, name, text):
    d = tmp_path / task_dir
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp_path


def test_mnli_and_qqp_layouts(tmp_path):
    _write(tmp_path, "MNLI", "dev_matched.tsv",
           "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
           "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
           "0\t1\t2\tg\tb\tb\tp\tp\tA man.\tA person.\tentailment\tentailment\n")
    ds = load_split(get_task("mnli"), "validation_matched", tmp_path)
    assert ds[0] == {"premise": "A man.", "hypothesis": "A person.", "label": 0}
    _write(tmp_path, "QQP", "dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tWhy?\tHow?\t1\n")
    assert load_split(get_task("qqp"), "validation", tmp_path)[0]["label"] == 1


def test_malformed_row_names_file_and_line(tmp_path):
    _write(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: malformed row"):
        load_split(get_task("sst2"), "validation", tmp_path)


def test_bad_label_empty_file_missing_column_bad_utf8(tmp_path):
    _write(tmp_path, "SST-2", "dev.tsv", "sentence\tlabel\ngood\t7\n")
    with pytest.raises(DataError, match="not one of the sst2 labels"):
        load_split(get_task("sst2"), "validation", tmp_path)
    _write(tmp_path, "SST-2", "dev.tsv", "")
    with pytest.raises(DataError, match="empty"):
        load_split(get_task("sst2"), "validation", tmp_path)
    _write(tmp_path, "SST-2", "dev.tsv", "text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match="missing column"):
        load_split(get_task("sst2"), "validation", tmp_path)
    _write(tmp_path, "SST-2", "dev.tsv", b"sentence\tlabel\n\xff\xfe bad\t1\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: invalid UTF-8"):
        load_split(get_task("sst2"), "validation", tmp_path)
    _write(tmp_path, "STS-B", "dev.tsv", "index\tsentence1\tsentence2\tscore\n0\ta\tb\tnan\n")
    with pytest.raises(DataError, match="not a finite number"):
        load_split(get_task("stsb"), "validation", tmp_path)


def test_missing_files_and_dirs(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="missing data file"):
        load_split(get_task("sst2"), "validation", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv("BEBERT_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path


def test_tokenize_is_cached_and_keyed_by_content(glue_dir, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("BEBERT_CACHE_DIR", str(tmp_path))
    task = get_task("sst2")
    ds = load_split(task, "validation", glue_dir)
    full = tokenize(ds, task, tokenizer, 32)
    part = tokenize(subsample(ds, 10, 0, shuffle=False), task, tokenizer, 32)
    assert len(full) == 872 and len(part) == 10  # a subset never hits the full set's cache entry
    again = tokenize(ds, task, tokenizer, 32)
    assert again["input_ids"][5] == full["input_ids"][5]
    assert len(list((tmp_path / "tokenized").iterdir())) == 2
    assert max(len(x) for x in full["input_ids"]) <= 32

import pytest

from bebert_cli.errors import UsageError
from bebert_cli.tasks import TASKS, get_task, resolve_split


def test_all_nine_glue_tasks_are_registered():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}


@pytest.mark.parametrize("name,num_labels,main", [
    ("cola", 2, "matthews_correlation"), ("sst2", 2, "accuracy"), ("mrpc", 2, "f1"), ("stsb", 1, "pearson"),
    ("qqp", 2, "f1"), ("mnli", 3, "accuracy"), ("qnli", 2, "accuracy"), ("rte", 2, "accuracy"), ("wnli", 2, "accuracy"),
])
def test_task_shapes(name, num_labels, main):
    task = get_task(name)
    assert task.num_labels == num_labels and task.main_metric == main
    assert task.is_regression == (name == "stsb")


def test_aliases_and_unknown_task():
    assert get_task("SST-2").name == "sst2" and get_task("sts-b").name == "stsb"
    with pytest.raises(UsageError, match="unknown task 'sst3'"):
        get_task("sst3")


def test_mnli_dev_is_matched_and_mismatched():
    assert resolve_split(get_task("mnli"), "dev") == ["validation_matched", "validation_mismatched"]
    assert resolve_split(get_task("sst2"), "dev") == ["validation"]
    with pytest.raises(UsageError):
        resolve_split(get_task("sst2"), "test-ish")

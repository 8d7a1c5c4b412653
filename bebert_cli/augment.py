"""Teacher-labelled data augmentation (TinyBERT-style, without GloVe): `bebert binarize --augment N`.

Each training row gets N copies in which every word piece is, with probability `prob`, replaced by
one of its `top_k` nearest neighbours (cosine) in the teacher's own input-embedding table. Word
starts are replaced by word starts and continuation pieces ("##ing") by continuation pieces, so a
copy keeps the row's length and segmentation. The copies carry `augmented = 1`: their label may
no longer hold, so distillation trains them on the teacher's soft labels alone (see
`quant.distill.AUGMENTED`).

Deterministic: copy c of row i draws from a generator seeded by (seed, i, c). The result is cached
on disk as Arrow (never pickles) beside the tokenized data, keyed by the rows, the embedding table
and the settings.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from bebert_cli.data import cache_root, load_cached, save_cached
from bebert_cli.errors import DataError
from bebert_cli.quant.distill import AUGMENTED

CACHE_VERSION = 1
_CHUNK = 1024  # query rows per similarity block: 1024 x vocab floats at a time, not vocab x vocab


def _is_continuation(token: str, markers: bool) -> bool:
    """A piece that continues a word: "##x" (WordPiece), or no word-start marker (BPE "Ġx", SentencePiece "▁x")."""
    if token.startswith("##"):
        return True
    return markers and not token.startswith(("Ġ", "▁"))


def candidate_pools(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(is_candidate, is_continuation) per vocabulary id; special and placeholder tokens ("[unused3]") never
    replace or get replaced."""
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for tok, i in vocab.items():
        tokens[i] = tok
    markers = any(t.startswith(("Ġ", "▁")) for t in tokens)
    special = set(tokenizer.all_special_ids)
    candidate = np.array([bool(t) and i not in special and not (t.startswith("[") and t.endswith("]"))
                          and not (t.startswith("<") and t.endswith(">")) for i, t in enumerate(tokens)])
    continuation = np.array([_is_continuation(t, markers) for t in tokens])
    return candidate, continuation


def nearest_neighbours(embeddings: torch.Tensor, queries: np.ndarray, candidate: np.ndarray,
                       continuation: np.ndarray, top_k: int) -> np.ndarray:
    """[len(queries), top_k] ids: each query's most cosine-similar candidates of its own kind, itself excluded."""
    emb = torch.nn.functional.normalize(embeddings.detach().float().cpu(), dim=-1)
    out = np.zeros((len(queries), top_k), dtype=np.int64)
    for kind in (False, True):
        pool = np.flatnonzero(candidate & (continuation == kind))
        rows = np.flatnonzero(continuation[queries] == kind)
        if len(rows) == 0:
            continue
        if len(pool) <= top_k:
            raise DataError(f"the teacher's vocabulary has only {len(pool)} candidate pieces of one kind; "
                            f"lower --augment-top-k below {len(pool)}")
        pool_t = torch.as_tensor(pool)
        pool_emb = emb[pool_t]
        for start in range(0, len(rows), _CHUNK):
            block = rows[start:start + _CHUNK]
            q = torch.as_tensor(queries[block])
            sims = emb[q] @ pool_emb.T
            sims[pool_t[None, :] == q[:, None]] = float("-inf")  # never a piece's own neighbour
            out[block] = pool[sims.topk(top_k, dim=-1).indices.numpy()]
    return out


def _digest(parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x00")
    return h.hexdigest()[:24]


def augment_dataset(ds, embeddings: torch.Tensor, tokenizer, *, copies: int, top_k: int, prob: float, seed: int,
                    cache: bool = True):
    """`ds` (tokenized rows) followed by `copies` augmented copies of every row, all with an `augmented` column."""
    import datasets

    if copies < 1:
        raise ValueError("copies must be at least 1")
    datasets.disable_progress_bars()  # our own progress display is the only one
    columns = [c for c in ds.column_names if c != AUGMENTED]
    ids = [np.asarray(x, dtype=np.int64) for x in ds["input_ids"]]
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    if len(flat) and int(flat.max()) >= embeddings.shape[0]:
        raise DataError(f"token id {int(flat.max())} is outside the teacher's {embeddings.shape[0]}-row embedding table")
    emb_bytes = embeddings.detach().float().cpu().contiguous().numpy().tobytes()
    others = [c for c in columns if c != "input_ids"]
    key = _digest([CACHE_VERSION, flat.tobytes(), np.asarray([len(x) for x in ids]).tobytes(),
                   *(f"{c}={list(ds[c])!r}" for c in others), hashlib.sha256(emb_bytes).hexdigest(), copies, top_k,
                   repr(float(prob)), seed, repr(sorted(tokenizer.all_special_ids))])
    cache_dir = cache_root("augmented") / key
    cached = load_cached(cache_dir) if cache else None
    if cached is not None:
        return cached

    candidate, continuation = candidate_pools(tokenizer)
    if len(candidate) < embeddings.shape[0]:  # embedding rows beyond the vocabulary never replace anything
        pad = embeddings.shape[0] - len(candidate)
        candidate, continuation = np.pad(candidate, (0, pad)), np.pad(continuation, (0, pad))
    candidate, continuation = candidate[: embeddings.shape[0]], continuation[: embeddings.shape[0]]
    queries = np.unique(flat[candidate[flat]]) if len(flat) else np.zeros(0, dtype=np.int64)
    table = np.zeros((embeddings.shape[0], top_k), dtype=np.int64)
    if len(queries):
        table[queries] = nearest_neighbours(embeddings, queries, candidate, continuation, top_k)
    replaceable = np.zeros(embeddings.shape[0], dtype=bool)
    replaceable[queries] = True

    new_ids = []
    for c in range(1, copies + 1):
        for i, row in enumerate(ids):
            rng = np.random.default_rng([seed, i, c])
            pick = (rng.random(len(row)) < prob) & replaceable[row]
            choice = rng.integers(0, top_k, len(row))
            new_ids.append(np.where(pick, table[row, choice], row).tolist())
    n = len(ids)
    out = {col: list(ds[col]) * (copies + 1) for col in others}
    out["input_ids"] = [x.tolist() for x in ids] + new_ids
    out[AUGMENTED] = [0] * n + [1] * (n * copies)
    result = datasets.Dataset.from_dict(out)
    if cache:
        save_cached(result, cache_dir)
    return result

"""EELBERT-style hashed, on-the-fly input embeddings.

EELBERT replaces BERT's input word-embedding table (``vocab_size x hidden``
floats, the single largest tensor of a small BERT) by a *function* of the
token string: an n-gram pooling hash.  Nothing of the table is stored in a
checkpoint; it is recomputed from the vocabulary whenever a model is built.

Scheme (everything here is part of the on-disk contract: a model trained with
these embeddings is only usable if the same table comes out again, in any
process and on any machine):

1. **Marking.**  Every token is turned into a *marked* string:

   * special tokens -- a bracketed literal such as ``[CLS]``, ``[PAD]``,
     ``[unused12]`` (regex ``^\\[[^\\[\\]\\s]+\\]$``) or an angle-bracket
     literal such as ``<s>``, ``<pad>`` (``^<[^<>\\s]+>$``) -- are *not* split:
     the whole literal string is the token's single n-gram, hashed in its own
     domain (blake2b personalisation ``eelbert-special``) so it can never
     coincide with an ordinary n-gram and distinct literals never coincide
     with each other;
   * a continuation wordpiece ``##ing`` (``##`` followed by at least one
     character) continues a word, so it gets **no** leading boundary marker:
     ``ing>``;
   * any other piece starts a word and gets the leading marker ``<``:
     ``play`` -> ``<play>``.

   In WordPiece *every* piece (word-initial or continuation) may be the last
   piece of a word -- whether a ``##`` piece follows is not known from the
   vocabulary -- so every non-special piece gets the trailing marker ``>``.
   Thus ``ing`` (``<ing>``) and ``##ing`` (``ing>``) differ.  As in
   fastText the markers are ordinary characters, so a continuation piece
   whose text itself starts with ``<`` (``##<x``) marks to the same string as
   the word-initial piece ``x`` (``<x>``); no such pair exists in the BERT
   vocabularies (all 30,522 bert-base-uncased tokens hash to distinct rows).

2. **N-grams.**  For each size ``n`` in ``settings.ngram_sizes`` the marked
   string (as Unicode code points) contributes all of its ``len - n + 1``
   character windows, *with multiplicity* (pooling, not a set).  A marked
   string of length ``<= n`` contributes itself, once, as a single n-gram
   (at most once in total even if several sizes fall back to it).  The
   n-grams of the several sizes are pooled together (union of the lists).

3. **Hashing.**  Each distinct n-gram's UTF-8 bytes are hashed with blake2b
   (8-byte digest, personalisation ``eelbert-ngram``) to a little-endian
   64-bit key ``k``.  Dimension ``j`` gets a 64-bit salt
   ``s_j = splitmix64(splitmix64(seed) + (j + 1) * 0x9E3779B97F4A7C15)`` and
   the value is ``x = mix64(k + s_j)`` (splitmix64 finaliser, wrapping
   uint64 arithmetic); its top 24 bits ``u`` give ``(2u + 1 - 2**24) / 2**24``,
   an odd multiple of ``2**-24`` strictly inside ``(-1, 1)``.

4. **Pooling.**  A token's embedding is the mean of its n-gram vectors.  The
   sum is taken exactly in int64 on the integer grid, divided in float64 and
   rounded once to float32, so the result does not depend on summation order,
   SIMD width, BLAS or platform.

Python's built-in ``hash()`` is never used (it is salted per process).

The computation is vectorised over all distinct n-grams x dimensions at once
(chunked to bound memory); the bert-base-uncased vocabulary (30,522 tokens) at
dimension 384 takes well under a second on one core.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HashEmbeddingSettings",
    "HashEmbedding",
    "compute_hash_embeddings",
    "clear_hash_embedding_cache",
    "marked_token",
    "token_ngrams",
    "tokens_from_vocab",
]

# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------

_SETTINGS_FIELDS = ("dim", "ngram_sizes", "seed", "projection")
_MAX_SEED = 2**64


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"HashEmbeddingSettings.{name} must be an int, got {type(value).__name__} {value!r}")
    return int(value)


@dataclass(frozen=True)
class HashEmbeddingSettings:
    """Configuration of a hashed input embedding.

    ``dim``: embedding width (must equal the model's hidden size).
    ``ngram_sizes``: character n-gram sizes pooled together; stored sorted.
    ``seed``: selects the hash-function family, ``0 <= seed < 2**64``.
    ``projection``: add a trainable ``dim x dim`` linear map (identity init)
    after the hashed lookup.
    """

    dim: int
    ngram_sizes: tuple[int, ...] = (3,)
    seed: int = 0
    projection: bool = False

    def __post_init__(self) -> None:
        dim = _check_int("dim", self.dim)
        if dim < 1:
            raise ValueError(f"HashEmbeddingSettings.dim must be >= 1, got {dim}")

        sizes_in = self.ngram_sizes
        if isinstance(sizes_in, (str, bytes)) or not isinstance(sizes_in, Sequence):
            raise ValueError(
                "HashEmbeddingSettings.ngram_sizes must be a non-empty tuple/list of ints, "
                f"got {type(sizes_in).__name__} {sizes_in!r}"
            )
        if len(sizes_in) == 0:
            raise ValueError("HashEmbeddingSettings.ngram_sizes must not be empty")
        sizes = [_check_int("ngram_sizes[]", n) for n in sizes_in]
        for n in sizes:
            if n < 1:
                raise ValueError(f"HashEmbeddingSettings.ngram_sizes entries must be >= 1, got {n}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"HashEmbeddingSettings.ngram_sizes has duplicates: {tuple(sizes)}")

        seed = _check_int("seed", self.seed)
        if not 0 <= seed < _MAX_SEED:
            raise ValueError(f"HashEmbeddingSettings.seed must be in [0, 2**64), got {seed}")

        if not isinstance(self.projection, bool):
            raise ValueError(
                f"HashEmbeddingSettings.projection must be a bool, got {type(self.projection).__name__} "
                f"{self.projection!r}"
            )

        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "ngram_sizes", tuple(sorted(sizes)))
        object.__setattr__(self, "seed", seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``ngram_sizes`` as a list)."""
        return {
            "dim": self.dim,
            "ngram_sizes": list(self.ngram_sizes),
            "seed": self.seed,
            "projection": self.projection,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HashEmbeddingSettings:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on bad input."""
        if not isinstance(d, Mapping):
            raise ValueError(f"HashEmbeddingSettings.from_dict expects a mapping, got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in _SETTINGS_FIELDS)
        if unknown:
            raise ValueError(
                f"HashEmbeddingSettings: unknown key(s) {unknown}; expected a subset of {list(_SETTINGS_FIELDS)}"
            )
        if "dim" not in d:
            raise ValueError("HashEmbeddingSettings: missing required key 'dim'")
        return cls(**dict(d))


# --------------------------------------------------------------------------
# tokens -> n-grams
# --------------------------------------------------------------------------

_SPECIAL_RE = re.compile(r"^(?:\[[^\[\]\s]+\]|<[^<>\s]+>)$")
BOW = "<"  # beginning-of-word marker
EOW = ">"  # end-of-word marker
_PERSON_NGRAM = b"eelbert-ngram"
_PERSON_SPECIAL = b"eelbert-special"


def _is_special(token: str) -> bool:
    return _SPECIAL_RE.match(token) is not None


def marked_token(token: str) -> str:
    """The boundary-marked form of a non-special token (see module docstring)."""
    if token.startswith("##") and len(token) > 2:
        return token[2:] + EOW
    return BOW + token + EOW


def token_ngrams(token: str, ngram_sizes: Sequence[int]) -> tuple[bool, list[str]]:
    """``(is_special, n-grams)`` of one token, with multiplicity."""
    if _is_special(token):
        return True, [token]
    s = marked_token(token)
    length = len(s)
    grams: list[str] = []
    whole_added = False
    for n in sorted(ngram_sizes):
        if length <= n:
            if not whole_added:
                grams.append(s)
                whole_added = True
        else:
            grams.extend(s[i : i + n] for i in range(length - n + 1))
    return False, grams


def tokens_from_vocab(vocab: Mapping[str, int]) -> list[str]:
    """Token list ordered by id from a ``token -> id`` mapping (e.g.
    ``tokenizer.get_vocab()``); ids must be exactly ``0 .. len(vocab) - 1``."""
    tokens: list[str | None] = [None] * len(vocab)
    for tok, idx in vocab.items():
        if not isinstance(idx, Integral) or not 0 <= idx < len(tokens) or tokens[idx] is not None:
            raise ValueError(f"vocabulary ids must be a permutation of 0..{len(vocab) - 1}; bad id {idx!r} for {tok!r}")
        tokens[int(idx)] = tok
    return tokens  # type: ignore[return-value]


# --------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))
_HALF = 1 << 24  # values are (2u + 1 - 2**24) / 2**24 with u in [0, 2**24)
_CHUNK_ELEMS = 1 << 21  # elements per vectorised block (16 MiB of uint64)


def _splitmix64_int(x: int) -> int:
    """Scalar splitmix64 (add golden gamma, then finalise) on Python ints."""
    z = (x + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _dim_salts(seed: int, dim: int) -> np.ndarray:
    base = _splitmix64_int(seed)
    return np.array(
        [_splitmix64_int((base + (j + 1) * _GOLDEN) & _M64) for j in range(dim)],
        dtype=np.uint64,
    )


def _gram_keys(grams: list[str], special: list[bool]) -> np.ndarray:
    blake = hashlib.blake2b
    digests = b"".join(
        blake(g.encode("utf-8"), digest_size=8, person=_PERSON_SPECIAL if sp else _PERSON_NGRAM).digest()
        for g, sp in zip(grams, special)
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def _gram_values(keys: np.ndarray, salts: np.ndarray) -> np.ndarray:
    """int32 ``[len(keys), dim]`` of odd integers in ``(-2**24, 2**24)``."""
    g, d = len(keys), len(salts)
    out = np.empty((g, d), dtype=np.int32)
    rows = max(1, _CHUNK_ELEMS // max(d, 1))
    for start in range(0, g, rows):
        stop = min(g, start + rows)
        x = keys[start:stop, None] + salts[None, :]  # wrapping uint64
        x ^= x >> _S30
        x *= _C1
        x ^= x >> _S27
        x *= _C2
        x ^= x >> _S31
        x >>= _S40  # top 24 bits
        v = x.astype(np.int32)
        v *= 2
        v += 1 - _HALF
        out[start:stop] = v
    return out


def _compute(tokens: Sequence[str], settings: HashEmbeddingSettings) -> torch.Tensor:
    d = settings.dim
    sizes = settings.ngram_sizes
    gram_index: dict[tuple[bool, str], int] = {}
    occ: list[int] = []
    counts = np.empty(len(tokens), dtype=np.int64)
    setdefault = gram_index.setdefault
    for t, tok in enumerate(tokens):
        sp, grams = token_ngrams(tok, sizes)
        for g in grams:
            occ.append(setdefault((sp, g), len(gram_index)))
        counts[t] = len(grams)
    if len(tokens) == 0:
        return torch.empty((0, d), dtype=torch.float32)

    uniq = list(gram_index)
    keys = _gram_keys([g for _, g in uniq], [sp for sp, _ in uniq])
    values = _gram_values(keys, _dim_salts(settings.seed, d))  # [G, d] int32

    occ_arr = np.asarray(occ, dtype=np.int64)
    offsets = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty((len(tokens), d), dtype=np.float32)
    budget = max(d, _CHUNK_ELEMS // 2)  # occurrences x dims per pooling block
    t0 = 0
    n_tok = len(tokens)
    while t0 < n_tok:
        # grow the block until its occurrence count would exceed the budget
        max_occ = max(1, budget // d)
        t1 = int(np.searchsorted(offsets, offsets[t0] + max_occ, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_tok)
        lo, hi = int(offsets[t0]), int(offsets[t1])
        block = values[occ_arr[lo:hi]]  # [occ, d] int32
        sums = np.add.reduceat(block, offsets[t0:t1] - lo, axis=0, dtype=np.int64)
        denom = counts[t0:t1, None].astype(np.float64) * float(_HALF)
        out[t0:t1] = (sums.astype(np.float64) / denom).astype(np.float32)
        t0 = t1
    return torch.from_numpy(out)


# --------------------------------------------------------------------------
# cache + public entry point
# --------------------------------------------------------------------------

_CACHE_SIZE = 4
_cache: OrderedDict[tuple[str, int, tuple[int, ...], int], torch.Tensor] = OrderedDict()
_cache_lock = threading.Lock()


def _tokens_digest(tokens: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(len(tokens).to_bytes(8, "little"))
    for tok in tokens:
        b = tok.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def clear_hash_embedding_cache() -> None:
    """Drop every cached table of this process."""
    with _cache_lock:
        _cache.clear()


def compute_hash_embeddings(
    tokens: Sequence[str], settings: HashEmbeddingSettings | Mapping[str, Any]
) -> torch.Tensor:
    """Hashed embedding table, float32 ``[len(tokens), settings.dim]``.

    Deterministic across processes and machines.  Results are cached in
    process (LRU of 4, keyed by the sha256 of the token list and the settings
    that affect the table); every call returns a fresh copy, so callers may
    modify it freely.
    """
    if not isinstance(settings, HashEmbeddingSettings):
        if isinstance(settings, Mapping):
            settings = HashEmbeddingSettings.from_dict(settings)
        else:
            raise TypeError(f"settings must be HashEmbeddingSettings, got {type(settings).__name__}")
    if isinstance(tokens, (str, bytes)):
        raise TypeError("tokens must be a sequence of str, not a single string")
    tokens = list(tokens)
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise TypeError(f"tokens[{i}] must be str, got {type(tok).__name__}")

    key = (_tokens_digest(tokens), settings.dim, settings.ngram_sizes, settings.seed)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit.clone()
    table = _compute(tokens, settings)
    with _cache_lock:
        _cache[key] = table
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return table.clone()


# --------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------


class HashEmbedding(nn.Module):
    """Drop-in replacement for ``nn.Embedding`` as BERT's ``word_embeddings``.

    The table is a non-persistent buffer (``hash_table``): it follows
    ``.to(device/dtype)`` but is never written to a ``state_dict``.  Without
    projection the module has no parameters; with ``settings.projection`` it
    has a trainable ``nn.Linear(dim, dim)`` initialised to the identity.

    The padding row is left as the hash of the pad token, not zeroed: BERT
    masks padded positions out of attention, so that row never reaches an
    unpadded output; keeping it makes the table a pure function of the token
    strings; and (as with ``nn.Embedding(padding_idx=...)``) ``padding_idx``
    only means "no gradient flows into this row", which holds trivially for a
    buffer.

    Attach it *after* loading a checkpoint (``model.bert.embeddings.
    word_embeddings = HashEmbedding(...)``): non-persistent buffers are not
    restored by ``from_pretrained``.  It cannot be weight-tied to an output
    layer (masked-LM heads) or resized with ``resize_token_embeddings``.
    """

    hash_table: torch.Tensor

    def __init__(
        self,
        tokens: Sequence[str],
        settings: HashEmbeddingSettings,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(settings, HashEmbeddingSettings):
            raise TypeError(f"settings must be HashEmbeddingSettings, got {type(settings).__name__}")
        table = compute_hash_embeddings(tokens, settings)
        n = table.shape[0]
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, Integral):
                raise TypeError(f"padding_idx must be an int or None, got {type(padding_idx).__name__}")
            padding_idx = int(padding_idx)
            if not -n <= padding_idx < n:
                raise ValueError(f"padding_idx {padding_idx} out of range for {n} tokens")
            if padding_idx < 0:
                padding_idx += n
        self.settings = settings
        self.num_embeddings = n
        self.embedding_dim = settings.dim
        self.padding_idx = padding_idx
        self.register_buffer("hash_table", table, persistent=False)
        self.projection: nn.Linear | None
        if settings.projection:
            self.projection = nn.Linear(settings.dim, settings.dim)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(settings.dim))
                self.projection.bias.zero_()
        else:
            self.projection = None

    @property
    def weight(self) -> torch.Tensor:
        """The (read-only) hashed table; for code that reads dtype/device."""
        return self.hash_table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(input_ids, self.hash_table)
        if self.projection is not None:
            out = self.projection(out)
        return out

    def extra_repr(self) -> str:
        s = (
            f"{self.num_embeddings}, {self.embedding_dim}, ngram_sizes={self.settings.ngram_sizes}, "
            f"seed={self.settings.seed}"
        )
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s

"""Recipes: small dataclasses saying what is binarized and how the student is trained.

A recipe is resolved from a preset plus command-line overrides and saved with the checkpoint
(`quantization_config.recipe` and `recipe.json`), so a run can be repeated exactly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace

from bebert_cli.errors import UsageError

DISTILL_TERMS = ("logits", "hidden", "dmd")
# One default length for every command (finetune, binarize, ensemble, eval), so a default pipeline's
# checkpoints are all made, scored and reported at the same L. Inputs are padded per batch, so short
# texts (SST-2: 13 tokens on average) cost no more than at 64; pair tasks need the 128.
DEFAULT_MAX_SEQ_LENGTH = 128
_STAGE = re.compile(r"w1a([0-9]+)")


@dataclass(frozen=True)
class Recipe:
    name: str
    weight_bits: int = 1
    activation_bits: int = 1  # 1, 2..8 (LSQ), or 32 (full precision)
    activation_mode: str = "sign"  # for 1-bit activations: sign (BiBERT) or elastic (BiT)
    attention: str = "bi"  # bi (Bi-Attention) or softmax
    distill: tuple[str, ...] = ("logits", "hidden", "dmd")
    epochs: float = 3.0
    lr: float = 5e-4
    batch_size: int = 32
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH
    max_train_samples: int | None = None
    seed: int = 42
    hard_label_weight: float = 0.5  # weight of the hard-label loss added to the soft logits loss
    fp_dtype: str = "float16"  # storage precision of the parameters that stay full precision
    embeddings: str = "binary"  # table (fp) | binary (1-bit rows) | hash (EELBERT, no table)
    hash_ngrams: tuple[int, ...] = (3,)
    hash_seed: int = 0
    hash_projection: bool = False
    # A smaller student than the teacher (UNO-EELBERT style), initialised at random: None = same shape.
    student_layers: int | None = None
    student_width: int | None = None
    # Training details the papers found to matter (defaults: the behaviour before they were knobs).
    group_by_length: bool = True  # batches of similar lengths: same rows, far less padding
    warmup_ratio: float = 0.1  # share of the steps with a linearly rising learning rate
    temperature: float = 1.0  # of the soft logits loss (scaled by T^2, Hinton et al.)
    scale_lr: float | None = None  # learning rate of the activation quantizers' scales (BiT: 1e-4); None: lr
    hidden_layers: str = "all"  # hidden states matched: all | last | comma list (0 = the embedding output)
    # Multi-step distillation (BiT): train w1a4 -> w1a2 -> w1a1, each student initialising and teaching
    # the next; the last stage is this recipe. () = one stage.
    stages: tuple[str, ...] = ()
    # Teacher-labelled augmentation (TinyBERT-style): copies of each training row with word pieces
    # replaced by nearest neighbours in the teacher's input embeddings; trained on soft labels only.
    augment: int = 0
    augment_top_k: int = 15
    augment_prob: float = 0.4
    notes: dict = field(default_factory=dict, compare=False)

    def validate(self) -> "Recipe":
        if self.weight_bits not in (1, 32):
            raise UsageError("--weight-bits must be 1 (binary) or 32 (keep the encoder full precision)")
        if self.weight_bits == 32 and self.activation_bits != 32:
            raise UsageError("quantized activations need binary weights; with --weight-bits 32 use --activation-bits 32")
        if self.activation_bits not in (1, 2, 3, 4, 5, 6, 7, 8, 32):
            raise UsageError("--activation-bits must be 1, 2..8 or 32")
        if self.attention not in ("bi", "softmax"):
            raise UsageError("--attention must be bi or softmax")
        if self.attention == "bi" and self.activation_bits != 1 and self.activation_bits != 32:
            raise UsageError("--attention bi needs 1-bit activations; use softmax with multi-bit activations")
        if self.activation_mode not in ("sign", "elastic"):
            raise UsageError("--activation-mode must be sign or elastic")
        bad = [t for t in self.distill if t not in DISTILL_TERMS]
        if bad:
            raise UsageError(f"--distill: unknown term(s) {bad}; use a comma list of {', '.join(DISTILL_TERMS)} or none")
        if self.fp_dtype not in ("float16", "float32"):
            raise UsageError("--fp-dtype must be float16 or float32")
        if self.embeddings not in ("table", "binary", "hash"):
            raise UsageError("--embeddings must be table, binary or hash")
        check_hash_options(self.hash_ngrams, self.hash_seed)
        for name in ("student_layers", "student_width"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.student_width is not None and self.student_width % 32:
            # student_heads() splits such a width into heads of 64 dimensions, or of 32 where 64 does not divide it
            raise UsageError(f"--student-width must be a multiple of 32 (heads of 64 or 32 dimensions), not {self.student_width}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError("--warmup-ratio must be in [0, 1)")
        if self.temperature <= 0:
            raise UsageError("--temperature must be positive")
        if self.scale_lr is not None and self.scale_lr <= 0:
            raise UsageError("--scale-lr must be positive")
        parse_hidden_layers(self.hidden_layers)
        if isinstance(self.augment, bool) or not isinstance(self.augment, int) or self.augment < 0:
            raise UsageError("--augment must be 0 or a positive number of copies per row")
        if self.augment_top_k < 1 or not 0 < self.augment_prob <= 1:
            raise UsageError("--augment-top-k must be at least 1 and --augment-prob in (0, 1]")
        if self.stages:
            bits = [stage_bits(s) for s in self.stages]
            if len(bits) < 2 or bits[-1] != self.activation_bits or self.weight_bits != 1:
                raise UsageError(f"--stages must list at least two stages ending with this recipe's own "
                                 f"w1a{self.activation_bits}, e.g. w1a4,w1a2,w1a{self.activation_bits}")
            if self.student_layers or self.student_width or self.embeddings == "hash":
                raise UsageError("--stages needs a student of the teacher's shape with an embedding table")
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.max_seq_length < 8:
            raise UsageError("epochs, lr, batch size must be positive and max sequence length at least 8")
        return self

    @property
    def embedding_bits(self) -> int:
        return 1 if self.embeddings == "binary" else 32

    @property
    def bits_label(self) -> str:
        """weights-embeddings-activations, as the papers write it (1-1-1, 1-1-4)."""
        emb = "h" if self.embeddings == "hash" else str(self.embedding_bits)
        return f"{self.weight_bits}-{emb}-{self.activation_bits}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("notes")
        d["distill"] = list(self.distill)
        d["hash_ngrams"] = list(self.hash_ngrams)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict):
            raise ValueError("recipe must be a JSON object")
        known = {f.name for f in fields(cls)} - {"notes"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown recipe field(s) {sorted(unknown)}")
        kwargs = dict(d)
        for key in ("distill", "hash_ngrams", "stages"):
            if key in kwargs:
                if not isinstance(kwargs[key], (list, tuple)):
                    raise ValueError(f"recipe field {key} must be a list")
                kwargs[key] = tuple(kwargs[key])
        recipe = cls(**kwargs)
        _check_types(recipe)
        return recipe


def _check_types(recipe: Recipe) -> None:
    expected = {"weight_bits": int, "activation_bits": int, "epochs": (int, float),
                "lr": (int, float), "batch_size": int, "max_seq_length": int, "seed": int, "name": str,
                "activation_mode": str, "attention": str, "fp_dtype": str, "embeddings": str,
                "group_by_length": bool, "warmup_ratio": (int, float), "temperature": (int, float),
                "scale_lr": (int, float, type(None)), "hidden_layers": str, "augment": int, "augment_top_k": int,
                "augment_prob": (int, float)}
    for name, typ in expected.items():
        value = getattr(recipe, name)
        if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
            raise ValueError(f"recipe field {name} has type {type(value).__name__}")


PRESETS: dict[str, Recipe] = {
    # BiBERT: 1-1-1, Bi-Attention, Direction-Matching Distillation (+ logits and hidden states).
    "bibert": Recipe("bibert"),
    # BiT: 1-1-1, elastic binary activations (learned scale/shift, {0,a} for probabilities), softmax kept.
    "bit": Recipe("bit", activation_mode="elastic", attention="softmax", distill=("logits", "hidden")),
    # BinaryBERT-style: binary weights and embeddings, 4- or 8-bit LSQ activations, softmax kept.
    "w1a4": Recipe("w1a4", activation_bits=4, attention="softmax", distill=("logits", "hidden"), lr=2e-4),
    "w1a8": Recipe("w1a8", activation_bits=8, attention="softmax", distill=("logits", "hidden"), lr=2e-4),
}


# binarize's (and ensemble's) recipe when none is named: the most accurate one measured within the
# README's budget, 8,000 SST-2 sentences for one epoch (docs/results.md, "The default recipe"): w1a4
# 0.7821 dev accuracy, w1a8 0.7775 from the same teacher; the 1-1-1 recipes sit near chance there.
# On the whole train set at 2 epochs w1a4 reached 0.8739 (seed 42; 0.8567 at seed 43) and w1a8 0.8716.
DEFAULT_RECIPE = "w1a4"


def resolve_recipe(name: str, **overrides) -> Recipe:
    """A preset with every non-None override applied, validated."""
    if name not in PRESETS:
        raise UsageError(f"unknown recipe {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "distill" in changes and isinstance(changes["distill"], str):
        changes["distill"] = parse_distill(changes["distill"])
    if "stages" in changes and isinstance(changes["stages"], str):
        changes["stages"] = tuple(x.strip().lower() for x in changes["stages"].split(",") if x.strip())
    if "hash_ngrams" in changes and isinstance(changes["hash_ngrams"], str):
        changes["hash_ngrams"] = parse_ngrams(changes["hash_ngrams"])
    bits = changes.pop("embedding_bits", None)
    if bits is not None:
        if bits not in (1, 32):
            raise UsageError("--embedding-bits must be 1 or 32")
        if "embeddings" in changes and changes["embeddings"] != ("binary" if bits == 1 else "table"):
            raise UsageError("--embedding-bits contradicts --embeddings")
        changes["embeddings"] = "binary" if bits == 1 else "table"
    return replace(PRESETS[name], **changes).validate()


def student_heads(width: int) -> int:
    """Attention heads of a `width`-wide student: heads of 64 dimensions, or of 32 where 64 does not divide it."""
    return width // 64 if width % 64 == 0 else max(1, width // 32)


_MAX_HASH_SEED = 2**64  # the hash family's seed is a 64-bit integer (hash_embedding.HashEmbeddingSettings)


def check_hash_options(ngrams, seed) -> None:
    """--hash-ngrams: distinct positive integers; --hash-seed: 0 <= seed < 2**64 (usage errors, exit 2)."""
    sizes = list(ngrams)
    if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise UsageError(f"--hash-ngrams must be positive integers, e.g. 3 or 2,3,4, not {','.join(map(str, sizes)) or 'nothing'}")
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"--hash-ngrams lists a size twice: {','.join(map(str, sizes))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_HASH_SEED:
        raise UsageError(f"--hash-seed must be an integer from 0 to 2**64 - 1, not {seed}")


def parse_ngrams(text: str) -> tuple[int, ...]:
    """--hash-ngrams "2,3,4" -> (2, 3, 4)."""
    try:
        return tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise UsageError(f"--hash-ngrams must be comma-separated integers, not {text!r}") from None


def parse_distill(text: str) -> tuple[str, ...]:
    text = text.strip().lower()
    if text in ("", "none", "off"):
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


def stage_bits(stage: str) -> int:
    """"w1a2" -> 2: the activation bits of one stage of a multi-step distillation."""
    m = _STAGE.fullmatch(stage)
    if not m or int(m.group(1)) not in (1, 2, 3, 4, 5, 6, 7, 8):
        raise UsageError(f"--stages: {stage!r} is not a stage; use w1aK with K in 1..8, e.g. w1a4,w1a2,w1a1")
    return int(m.group(1))


def stage_recipe(recipe: Recipe, index: int) -> Recipe:
    """The recipe stage `index` of recipe.stages trains: the final one is the recipe itself; an
    earlier one has its activation bits, with softmax attention and LSQ activations when multi-bit."""
    if index == len(recipe.stages) - 1:
        return recipe
    bits = stage_bits(recipe.stages[index])
    return replace(recipe, name=f"{recipe.name}-stage{index + 1}-{recipe.stages[index]}", activation_bits=bits,
                   attention="softmax" if bits > 1 else recipe.attention, stages=())


def parse_hidden_layers(text: str) -> tuple[int, ...] | str:
    """"all" | "last" | "0,3,6" (hidden-state indices; 0 = the embedding output)."""
    if text in ("all", "last"):
        return text
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--hidden-layers must be all, last or comma-separated layer numbers, not {text!r}") from None
    if not layers or min(layers) < 0:
        raise UsageError("--hidden-layers: layer numbers start at 0 (the embedding output)")
    return layers

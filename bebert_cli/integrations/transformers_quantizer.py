"""bebert's packed format as a transformers quantizer: `from_pretrained(packed_dir)` just works.

A packed checkpoint's config.json says `quantization_config.quant_method == "bebert"`. transformers
looks that name up in its quantizer registry; this module registers a config class and a quantizer
for it (public helpers `register_quantization_config` / `register_quantizer`). Importing it imports
transformers and torch, so `bebert_cli` only imports it when registering (see `integrations`).

What the quantizer does, in `from_pretrained`'s order:

1. `update_dtype`: float32. Packed models compute in float32 (that is what makes the simulated
   runtime bit-identical to training); "auto" would otherwise pick the file's float16.
2. before the weights (model still on the meta device): the same conversion `load_packed` uses
   (`packed.convert_to_packed_` -> `quantize_(packed=True)`), so the modules' names, shapes and dtypes
   are exactly the file's (uint8 signs and float16 scales are buffers of those dtypes, and
   transformers loads each tensor in its module's dtype, so nothing is cast); then the file's header
   is checked against the model exactly as `load_packed` checks it.
3. transformers loads the tensors (no missing or unexpected keys: the model now *is* the packed form).
4. after the weights: hashed-embedding tables (non-persistent buffers, never in the file) are
   recomputed -- transformers refills non-persistent buffers with empty memory -- then
   `packed.finish_packed_model` attaches `bebert_recipe` / `bebert_plan` and prepares the packed
   runtime if asked.

`save_pretrained` works: the state dict is the packed one (`packed.packed_state_dict`, full-precision
tensors back in the recipe's `fp_dtype`) and the quantization_config block is written back as read,
so the saved directory loads again, with both loaders, to the same logits.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import transformers.quantizers.auto as _auto
from transformers.quantizers.auto import register_quantization_config, register_quantizer
from transformers.quantizers.base import HfQuantizer
from transformers.utils import logging
from transformers.utils.quantization_config import QuantizationConfigMixin

from bebert_cli.errors import CheckpointError
from bebert_cli.integrations.notice import registration_failed

QUANT_METHOD = "bebert"
RUNTIMES = ("simulated", "packed")

logger = logging.get_logger(__name__)


class BebertQuantizationConfig(QuantizationConfigMixin):
    """A bebert `quantization_config` block, plus one loading option.

    The block is kept exactly as the checkpoint wrote it (`to_dict` gives it back unchanged; it is
    validated by the quantizer with `packed.validate_quant_config`). `runtime` ("simulated", the
    default, as `bebert_cli.load_model`; or "packed": the bit kernels) is a loading option, never
    written to config.json. Pass it as
    `from_pretrained(path, quantization_config=BebertQuantizationConfig(runtime="packed"))`.
    """

    def __init__(self, runtime: str = "simulated", **block):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        block["quant_method"] = QUANT_METHOD
        self._block = block
        self.runtime = runtime
        self.quant_method = QUANT_METHOD

    def to_dict(self) -> dict:
        return copy.deepcopy(self._block)

    def __iter__(self):
        yield from self.to_dict().items()

    def get_loading_attributes(self) -> dict:
        # transformers copies these from a config passed to from_pretrained onto the checkpoint's own
        # (only for classes in LOADING_ATTRIBUTES_CONFIG_TYPES, which `register` extends).
        return {"runtime": self.runtime}


class BebertHfQuantizer(HfQuantizer):
    """Loads bebert packed checkpoints (pre-quantized only: binarizing is `bebert binarize`'s job)."""

    requires_calibration = True  # refuses quantization_config=BebertQuantizationConfig() on a plain model
    quantization_config: BebertQuantizationConfig

    def __init__(self, quantization_config, **kwargs):
        super().__init__(quantization_config, **kwargs)
        self._recipe = self._plan = self._vocab = None

    @property
    def runtime(self) -> str:
        return getattr(self.quantization_config, "runtime", "simulated")

    def validate_environment(self, *args, **kwargs):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"bebert runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")

    def update_dtype(self, dtype):
        if dtype != torch.float32:
            logger.info(f"bebert packed models compute in float32; dtype {dtype} is not used")
        return torch.float32

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        from bebert_cli.quant import packed

        where = getattr(model.config, "name_or_path", None) or "the checkpoint"
        block = self.quantization_config.to_dict()
        recipe = packed.validate_quant_config(block, where)
        if not type(model).__name__.endswith("ForSequenceClassification"):
            raise CheckpointError(f"{where} is a bebert packed sequence classifier: load it with "
                                  f"AutoModelForSequenceClassification, not {type(model).__name__}")
        if recipe.embeddings == "hash":
            self._vocab = packed.hash_vocab(where)
        plan = packed.convert_to_packed_(model, block, recipe, where, runtime=self.runtime, vocab=self._vocab)
        files = [Path(f) for f in checkpoint_files or ()]
        if files and all(f.suffix == ".safetensors" for f in files):
            from bebert_cli.quant.safetensors_check import read_header

            header = {}
            for f in files:
                header.update(read_header(f))
            packed.check_against_header(where, model.state_dict(), header, recipe.fp_dtype)
        self._recipe, self._plan = recipe, plan
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        from bebert_cli.quant import packed
        from bebert_cli.quant.hash_embedding import HashEmbedding, compute_hash_embeddings

        for m in model.modules():
            if isinstance(m, HashEmbedding):
                m.hash_table = compute_hash_embeddings(self._vocab, m.settings).to(m.hash_table.device)
        packed.finish_packed_model(model, self._recipe, self._plan, self.runtime)
        return model

    def is_serializable(self, *args, **kwargs) -> bool:
        return True

    def get_state_dict_and_metadata(self, model):
        from bebert_cli.quant.packed import packed_state_dict

        return packed_state_dict(model, model.bebert_recipe.fp_dtype), {}

    @property
    def is_trainable(self) -> bool:
        return False


def _ours(existing, cls) -> bool:
    # The same class, or this very class from a reloaded copy of this module.
    return existing is cls or (getattr(existing, "__module__", None) == cls.__module__
                               and getattr(existing, "__qualname__", None) == cls.__qualname__)


def register() -> None:
    """Register the config and quantizer under "bebert". Idempotent; refuses to replace someone else's."""
    pairs = ((_auto.AUTO_QUANTIZATION_CONFIG_MAPPING, BebertQuantizationConfig, register_quantization_config),
             (_auto.AUTO_QUANTIZER_MAPPING, BebertHfQuantizer, register_quantizer))
    for mapping, cls, _ in pairs:
        existing = mapping.get(QUANT_METHOD)
        if existing is not None and not _ours(existing, cls):
            raise RuntimeError(f"transformers already has a different {QUANT_METHOD!r} quantizer registered: {existing!r}")
    for mapping, cls, helper in pairs:
        if mapping.get(QUANT_METHOD) is None:
            helper(QUANT_METHOD)(cls)
        elif mapping[QUANT_METHOD] is not cls:
            mapping[QUANT_METHOD] = cls  # a reloaded copy of this module: the public helper refuses re-registration
    # Let `runtime` from a config passed to from_pretrained reach the checkpoint's config. There is no
    # public hook for this; without it (a future transformers) a passed runtime is ignored, with
    # transformers' own warning, and prepare_packed_runtime(model) after loading does the same.
    types = getattr(_auto, "LOADING_ATTRIBUTES_CONFIG_TYPES", None)
    if isinstance(types, tuple) and BebertQuantizationConfig not in types:
        _auto.LOADING_ATTRIBUTES_CONFIG_TYPES = types + (BebertQuantizationConfig,)


def is_registered() -> bool:
    return _ours(_auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD), BebertHfQuantizer) and \
        _ours(_auto.AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD), BebertQuantizationConfig)


# Last: when this module is the first to import transformers' registry (imported directly, after
# bebert_cli armed its hook), the hook fired at the imports above and left the registration to here
# (it set _REGISTER_WHEN_DEFINED on this half-defined module).
_DEFINED = True

if globals().pop("_REGISTER_WHEN_DEFINED", False):
    try:
        register()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the user's import must go on
        registration_failed(exc)

# Written by `bebert export`. Standalone: needs only torch + transformers + safetensors (never bebert itself).
"""A bebert binary BERT-family sequence classifier, loadable with

    AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)

The original architecture (BERT, RoBERTa, ELECTRA or DistilBERT, from transformers) is built from the
saved config and its layers are swapped for binary ones, as `quantization_config` lists them:

* binary Linear: 1-bit weights (packed signs, one fp16 scale per output row) and quantized input
  activations: sign(x) (BiBERT), alpha*sign(x - beta) (BiT, elastic) or LSQ k-bit integers times a
  step (w1a4 / w1a8); output = linear(integers, signs) * (row scale * activation scale) + bias
  (an exact integer dot first: "linear_form" "split", the only form bebert writes);
* binary word embeddings: packed signs and one fp16 scale per token;
* attention: BiBERT Bi-Attention (bool(B_Q B_K^T * s + mask) @ sign(V), no softmax) or softmax with
  quantized Q, K, V and probabilities (BiT, w1a4, w1a8);
* hashed (EELBERT) embeddings: the hashed table, stored as computed.

The float operations are those of bebert's simulated runtime, in the same order, so the logits are
the ones bebert computes for the same checkpoint. Storage ("storage" in the quantization config):
"packed" (uint8 signs + fp16 scales, the bebert packed format) or "dense" (an ordinary fp32
checkpoint of the binarized weights, w = scale * sign, that also loads as a plain full-precision
model; the activation quantizers then live in bebert_binary.safetensors). Inference only.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

try:
    from transformers import PreTrainedModel
except ImportError:  # pragma: no cover
    from transformers.modeling_utils import PreTrainedModel

from .configuration_bebert import BebertConfig

ATTN_IMPLEMENTATION = "bebert_remote"
WEIGHTS_NAME = "model.safetensors"
DENSE_EXTRA_NAME = "bebert_binary.safetensors"
FORMAT_VERSION = 3  # 2: a 1-1-1 FFN's binary input is sign(y) (see SignOfInput); 3: integer attention products


def _shifts(device) -> torch.Tensor:
    # Made per call, never at import: a module first imported inside transformers' loading runs under
    # `torch.device("meta")`, and a module-level tensor would be a meta tensor with no data.
    return torch.arange(8, dtype=torch.uint8, device=device)
_QKV_PARENT = {"bert": "attention.self", "roberta": "attention.self", "electra": "attention.self", "distilbert": "attention"}


# ---------------------------------------------------------------------------------------------
# bit packing: 8 signs per uint8, bit i of byte j = column 8j+i, bit 1 = +1 (sign(0) = +1)
# ---------------------------------------------------------------------------------------------

def unpack_signs(packed: torch.Tensor, k: int, dtype=torch.float32) -> torch.Tensor:
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    bits = bits.reshape(*packed.shape[:-1], -1)[..., :k]
    return bits.to(dtype) * 2 - 1


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """bool [..., K] (True = +1) -> uint8 [..., ceil(K/8)]."""
    bits = bits.to(torch.uint8)
    k = bits.shape[-1]
    pad = (k + 7) // 8 * 8 - k
    if pad:
        bits = F.pad(bits, (0, pad))
    bits = bits.reshape(*bits.shape[:-1], -1, 8)
    return (bits << _shifts(bits.device)).sum(dim=-1, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# quantizers (forward values exactly as bebert computes them)
# ---------------------------------------------------------------------------------------------

def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


class BinaryActivation(nn.Module):
    """sign(x) | alpha * sign(x - beta) (elastic) | alpha * clip(round((x - beta) / alpha), 0, 1)."""

    def __init__(self, mode: str = "sign"):
        super().__init__()
        self.mode = mode
        if mode != "sign":
            self.alpha = nn.Parameter(torch.tensor(1.0), requires_grad=False)
            self.beta = nn.Parameter(torch.tensor(0.0), requires_grad=False)
            self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"

    def forward(self, x):
        if self.mode == "sign":
            return _sign(x)
        g = 1.0 / math.sqrt(max(1, x.numel()))
        alpha = _grad_scale(self.alpha, g)
        if self.mode == "elastic":
            return alpha * _sign(x - self.beta)
        return alpha * _round_ste(((x - self.beta) / alpha).clamp(0, 1))


def _binary_split(self, x):
    if self.mode == "sign":
        return _sign(x), None
    if self.mode == "elastic":
        return _sign(x - self.beta), self.alpha
    raise ValueError("elastic_unsigned activations have no split form")


BinaryActivation.split = _binary_split


class LsqActivation(nn.Module):
    """Learned-step-size k-bit activations: round(clip(x / step)) * step."""

    def __init__(self, bits: int, signed: bool = True):
        super().__init__()
        self.bits, self.signed = bits, signed
        self.qmin = -(2 ** (bits - 1)) if signed else 0
        self.qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        self.step = nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"

    def forward(self, x):
        g = 1.0 / math.sqrt(max(1, x.numel()) * self.qmax)
        step = _grad_scale(self.step, g)
        return _round_ste((x / step).clamp(self.qmin, self.qmax)) * step


def _lsq_split(self, x):
    return _round_ste((x / self.step).clamp(self.qmin, self.qmax)), self.step


LsqActivation.split = _lsq_split


class SignOfInput(nn.Module):
    """act(y) with its sign forced to y's (format 2): values whose sign differs (GELU's underflow to
    -0.0, NaN from +inf) become +-(smallest normal float). Only the sign is read downstream."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, y):
        out = self.act(y)
        positive = y >= 0
        tiny = torch.finfo(out.dtype).tiny
        return torch.where((out >= 0) != positive, torch.where(positive, tiny, -tiny).to(out.dtype), out)


_FFN_ACTIVATION = {"bert": ("intermediate", "intermediate_act_fn"), "roberta": ("intermediate", "intermediate_act_fn"),
                   "electra": ("intermediate", "intermediate_act_fn"), "distilbert": ("ffn", "activation")}
_SIGN_PRESERVING = {"GELUActivation", "AccurateGELUActivation", "FastGELUActivation", "NewGELUActivation", "GELUTanh",
                    "QuickGELUActivation", "ClippedGELUActivation", "SiLUActivation", "GELU", "SiLU"}


def make_activation_quantizer(bits: int, mode: str, *, unsigned: bool = False) -> nn.Module:
    if bits >= 32:
        return nn.Identity()
    if bits == 1:
        return BinaryActivation("elastic_unsigned" if unsigned else mode)
    return LsqActivation(bits, signed=not unsigned)


# ---------------------------------------------------------------------------------------------
# binary layers
# ---------------------------------------------------------------------------------------------

class PackedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, act_quant: nn.Module):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_packed", torch.zeros(out_features, (in_features + 7) // 8, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float16))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.act_quant = act_quant
        self._signs = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight_bits=1"

    def _apply(self, fn, *args, **kwargs):
        self._signs = None
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._signs = None
        return super()._load_from_state_dict(*args, **kwargs)

    def signs(self) -> torch.Tensor:
        if self._signs is None:
            self._signs = unpack_signs(self.weight_packed, self.in_features)
        return self._signs

    def forward(self, x):
        w_scale = self.weight_scale.float()
        split = getattr(self.act_quant, "split", None)
        if split is not None:
            # integers . signs (exact), then every scale: what bebert and its bit kernels compute
            values, a_scale = split(x)
            y = F.linear(values, self.signs()) * (w_scale if a_scale is None else w_scale * a_scale)
        else:  # full-precision input activations (activation bits 32): nothing to split
            y = F.linear(self.act_quant(x), self.signs()) * w_scale
        return y + self.bias if self.bias is not None else y


class PackedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_packed", torch.zeros(num_embeddings, (embedding_dim + 7) // 8, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float16))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits=1, packed"

    @property
    def weight(self) -> torch.Tensor:
        return unpack_signs(self.weight_packed, self.embedding_dim) * self.weight_scale.float().unsqueeze(-1)

    def forward(self, ids):
        signs = unpack_signs(self.weight_packed[ids], self.embedding_dim)
        return signs * self.weight_scale.float()[ids].unsqueeze(-1)


class TableEmbedding(nn.Module):
    """EELBERT hashed embeddings: the hashed table (stored, as computed from the vocabulary) + optional projection."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, projection: bool = False):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("hash_table", torch.zeros(num_embeddings, embedding_dim))
        self.projection = nn.Linear(embedding_dim, embedding_dim) if projection else None

    @property
    def weight(self) -> torch.Tensor:
        return self.hash_table

    def forward(self, ids):
        out = F.embedding(ids, self.hash_table)
        if self.projection is not None:
            out = self.projection(out)
        return out


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------

class AttentionQuant(nn.Module):
    def __init__(self, mode: str, bits: int, act_mode: str, integer_products: bool = True):
        super().__init__()
        self.mode, self.bits = mode, bits
        qmode = "sign" if mode == "bi" else act_mode
        self.q_quant = make_activation_quantizer(bits, qmode)
        self.k_quant = make_activation_quantizer(bits, qmode)
        self.v_quant = make_activation_quantizer(bits, qmode)
        self.p_quant = make_activation_quantizer(bits, "elastic", unsigned=True) if mode == "softmax" else nn.Identity()
        # format 3: with LSQ quantizers the products multiply the integers and scale once
        self.integer_products = integer_products and mode == "softmax" and all(
            isinstance(m, LsqActivation) for m in (self.q_quant, self.k_quant, self.v_quant, self.p_quant))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, bits={self.bits}"


def bebert_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    aq = getattr(module, "bebert_attn", None)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if aq is None:
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = nn.functional.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, p=dropout, training=module.training)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights
    if aq.mode == "bi":
        scores = torch.matmul(aq.q_quant(query), aq.k_quant(key).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        scores = nn.functional.dropout(scores, p=dropout, training=module.training)
        weights = (scores >= 0).to(scores.dtype)
        out = torch.matmul(weights, aq.v_quant(value))
    elif aq.integer_products:  # bebert's attention._integer_products
        q, q_step = aq.q_quant.split(query)
        k, k_step = aq.k_quant.split(key)
        scores = torch.matmul(q, k.transpose(2, 3)) * (q_step * k_step * scaling)
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = nn.functional.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, p=dropout, training=module.training)
        p, p_step = aq.p_quant.split(weights)
        v, v_step = aq.v_quant.split(value)
        out = torch.matmul(p, v) * (p_step * v_step)
    else:
        scores = torch.matmul(aq.q_quant(query), aq.k_quant(key).transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = nn.functional.softmax(scores, dim=-1)
        weights = nn.functional.dropout(weights, p=dropout, training=module.training)
        out = torch.matmul(aq.p_quant(weights), aq.v_quant(value))
    return out.transpose(1, 2).contiguous(), weights


def register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, bebert_attention)
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    except ImportError:  # pragma: no cover - older transformers build the additive mask themselves
        return
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, eager_mask)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

def _split_config(config) -> tuple[dict, dict]:
    """(original architecture config dict, quantization config) from a bebert or a plain config."""
    if isinstance(config, BebertConfig) or getattr(config, "model_type", None) == "bebert":
        return dict(config.base_config), dict(config.bebert_quantization)
    qc = getattr(config, "bebert_quantization", None)
    if not isinstance(qc, dict):
        raise ValueError("this config has no bebert_quantization: not a bebert export")
    base = config.to_dict()
    for key in ("bebert_quantization", "auto_map", "architectures", "_attn_implementation_autoset"):
        base.pop(key, None)
    return base, dict(qc)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _encoder_layers(model) -> list:
    base = getattr(model, model.base_model_prefix)
    if model.config.model_type == "distilbert":
        return list(base.transformer.layer)
    return list(base.encoder.layer)


def binarize_architecture(model, qc: dict) -> None:
    """Swap the layers quantization_config lists for their binary forms, in place (as bebert's quantize_)."""
    version = qc.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"bebert packed format {version!r} is newer than this code reads ({FORMAT_VERSION})")
    if qc.get("bit_order", "little") != "little" or qc.get("pack_dtype", "uint8") != "uint8":
        raise ValueError("unsupported bit order or pack dtype")
    recipe = qc["recipe"]
    bits, mode = int(recipe["activation_bits"]), recipe["activation_mode"]
    if qc.get("linear_form", "split") != "split":
        raise ValueError(f"unsupported linear_form {qc.get('linear_form')!r}: this code computes the 'split' form only")
    for name in qc.get("binary_modules", []):
        lin = model.get_submodule(name)
        act = make_activation_quantizer(bits, mode)
        _set(model, name, PackedLinear(lin.in_features, lin.out_features, lin.bias is not None, act))
    for name in qc.get("binary_embeddings", []):
        emb = model.get_submodule(name)
        _set(model, name, PackedEmbedding(emb.num_embeddings, emb.embedding_dim, emb.padding_idx))
    for name in qc.get("hashed_embeddings", []):
        emb = model.get_submodule(name)
        _set(model, name, TableEmbedding(emb.num_embeddings, emb.embedding_dim, emb.padding_idx,
                                         projection=bool(recipe.get("hash_projection", False))))
    if bits < 32:
        register_attention()
        parent = _QKV_PARENT[model.config.model_type]
        holder_name, attr = _FFN_ACTIVATION[model.config.model_type]
        for layer in _encoder_layers(model):
            layer.get_submodule(parent).bebert_attn = AttentionQuant(recipe["attention"], bits, mode, integer_products=version >= 3)
            holder = layer.get_submodule(holder_name)
            act = getattr(holder, attr)
            if (version >= 2 and bits == 1 and mode == "sign" and int(recipe.get("weight_bits", 1)) == 1
                    and type(act).__name__ in _SIGN_PRESERVING):
                setattr(holder, attr, SignOfInput(act))
        model.config._attn_implementation = ATTN_IMPLEMENTATION


class BebertForSequenceClassification(PreTrainedModel):
    """The binary classifier; `self.model` is the original transformers architecture, binarized."""

    config_class = BebertConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        base, qc = _split_config(config)
        self.bebert_quantization = qc
        base_config = AutoConfig.for_model(**base)
        inner = AutoModelForSequenceClassification.from_config(base_config)
        binarize_architecture(inner, qc)
        self.model = inner.eval()
        self.post_init()

    def _init_weights(self, module):  # weights come from the checkpoint; nothing to initialise
        pass

    def init_weights(self):
        pass

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                labels=None, **kwargs):
        args = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                    position_ids=position_ids, inputs_embeds=inputs_embeds, labels=labels)
        args = {k: v for k, v in args.items() if v is not None}
        return self.model(**args, **kwargs)

    # -- loading ----------------------------------------------------------------------------

    def load_bebert_state(self, state: dict, extra: dict | None = None) -> None:
        """Load tensors as saved by bebert (packed) or as exported dense (+ the quantizer file)."""
        qc = self.bebert_quantization
        state = dict(state)
        state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
        if qc.get("storage", "packed") == "dense":
            extra = {k[len("model."):] if k.startswith("model.") else k: v for k, v in (extra or {}).items()}
            for name in list(qc.get("binary_modules", [])) + list(qc.get("binary_embeddings", [])):
                w = state.pop(f"{name}.weight").float()
                state[f"{name}.weight_packed"] = pack_bits(~torch.signbit(w))  # w = scale * sign; -0.0 keeps its sign
                state[f"{name}.weight_scale"] = w.abs().amax(dim=-1).half()
            for name in qc.get("hashed_embeddings", []):
                state.pop(f"{name}.weight", None)  # the plain-model table; the exact one is in the extra file
            state.update(extra)
        expected = self.model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in state.items():
            want = expected[k]
            if tuple(v.shape) != tuple(want.shape):
                raise ValueError(f"tensor {k} has shape {tuple(v.shape)}, expected {tuple(want.shape)}")
            if v.dtype != want.dtype:
                state[k] = v.to(want.dtype)
        self.model.load_state_dict(state, strict=True)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        from safetensors.torch import load_file
        from transformers.utils import cached_file

        hub = {k: kwargs.pop(k) for k in ("cache_dir", "force_download", "local_files_only", "proxies", "revision",
                                          "subfolder", "token") if k in kwargs}
        dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
        if dtype not in (None, "auto", torch.float32, "float32"):
            raise ValueError(f"bebert binary models run in float32, not {dtype}")
        device_map = kwargs.pop("device_map", None)
        path = str(pretrained_model_name_or_path)
        if config is None:
            with open(cached_file(path, "config.json", **hub), encoding="utf-8") as fh:
                raw = json.load(fh)
            if raw.get("model_type") == BebertConfig.model_type:
                config = BebertConfig.from_pretrained(path, **hub)
            else:
                config = AutoConfig.from_pretrained(path, **hub)
        model = cls(config)
        state = load_file(cached_file(path, WEIGHTS_NAME, **hub))
        extra = None
        if model.bebert_quantization.get("storage", "packed") == "dense":
            extra = load_file(cached_file(path, DENSE_EXTRA_NAME, **hub))
        model.load_bebert_state(state, extra)
        model.eval()
        if isinstance(device_map, (str, torch.device)) and str(device_map) not in ("auto", "cpu"):
            model.to(device_map)
        model.name_or_path = path
        return model

"""FLOPs and binary operations per sequence of L tokens, from a `Count`.

Conventions (the papers' way, so that the numbers can be compared with BiBERT / BinaryBERT tables):

- a full-precision matrix product costs 2 FLOPs per multiply-accumulate: a Linear in x out run on
  T tokens is 2*in*out*T FLOPs (T = L, or 1 for the pooler and classifier, which see [CLS] only);
  each attention product (Q K^T and A V) is 2*L*L*hidden FLOPs per layer;
- a product with 1-bit weights and b-bit activations costs BINOPS_PER_MAC * b binary operations per
  multiply-accumulate (an XNOR and a popcount-accumulate per bit plane: 2*in*out*T*b); an attention
  product with b-bit operands on both sides costs 2*L*L*hidden*b*b (Bi-Attention and BiT: b = 1);
- FLOP-equivalent = FLOPs + binary ops / 64 (one 64-bit word op does 64 binary ops);
- 1-bit weights with full-precision activations cost full FLOPs (the adds are still float);
- embedding lookups, LayerNorm, GELU, softmax, residual adds, the per-row scales and the ensemble's
  weighted sum are elementwise and not counted.

With these, a BERT-base classifier at L=128 is 22.35 GFLOPs (BiBERT's table: 22.5 G) and its 1-1-1
binarization 22.35 G binary ops + 3 kFLOPs (fp classifier) = 0.35 GFLOP-equivalent (BiBERT: 0.4 G).
Counting one binary op per multiply-accumulate instead would halve every binary figure (0.17 G).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BINOPS_PER_MAC = 2  # XNOR + popcount-accumulate, as multiply + add counts 2 FLOPs
BINOPS_PER_FLOP = 64
FP_ACT_BITS = 16  # activations of this many bits or more count as full precision

CONVENTIONS = {
    "flops": "full-precision FLOPs per sequence: 2 per multiply-accumulate (Linear 2*in*out*tokens; "
             "attention Q.K^T and A.V 2*L*L*hidden each per layer); pooler/classifier run on 1 token",
    "binary_ops": f"binary operations per sequence: {BINOPS_PER_MAC} per multiply-accumulate per activation bit "
                  "(1-bit weights x b-bit activations: 2*in*out*tokens*b; b-bit x b-bit attention products: "
                  "2*L*L*hidden*b*b)",
    "flop_equivalent": f"flops + binary_ops / {BINOPS_PER_FLOP}",
    "not_counted": "embedding lookups, LayerNorm, GELU, softmax, residual adds, scales (elementwise)",
    "params": "total excludes the fp16 per-row scales of 1-bit tensors (listed as 'scales'); "
              "on_the_fly = hashed embedding values computed at load time (0 bytes)",
    "bytes": "weights = safetensors file sizes; disk = every file of the checkpoint (all ensemble members and "
             "root files) except README.md and hidden files; MB = 10^6 bytes",
    "ratios": "size_ratio = baseline weights bytes / model weights bytes; disk_ratio likewise on disk bytes; "
              "flop_ratio = baseline FLOP-equivalent / model FLOP-equivalent; metric_delta in points (x100)",
}


@dataclass
class FlopCount:
    seq_len: int
    flops: int
    binary_ops: int

    @property
    def flop_equivalent(self) -> float:
        return self.flops + self.binary_ops / BINOPS_PER_FLOP

    def to_dict(self) -> dict:
        return {**asdict(self), "flop_equivalent": self.flop_equivalent}


def linear_cost(in_features: int, out_features: int, tokens: int, weight_bits: int, act_bits: int) -> tuple[int, int]:
    """(FLOPs, binary ops) of one Linear on `tokens` tokens."""
    macs = in_features * out_features * tokens
    if weight_bits >= FP_ACT_BITS or act_bits >= FP_ACT_BITS:
        return 2 * macs, 0
    return 0, BINOPS_PER_MAC * macs * weight_bits * act_bits


def attention_cost(layers: int, hidden: int, seq_len: int, act_bits: int) -> tuple[int, int]:
    """(FLOPs, binary ops) of Q K^T and A V over `layers` layers."""
    macs = layers * 2 * seq_len * seq_len * hidden
    if act_bits >= FP_ACT_BITS:
        return 2 * macs, 0
    return 0, BINOPS_PER_MAC * macs * act_bits * act_bits


def count_flops(count, seq_len: int) -> FlopCount:
    if seq_len < 1:
        raise ValueError("sequence length must be positive")
    flops = binops = 0
    for op in count.linears:
        f, b = linear_cost(op.in_features, op.out_features, 1 if op.one_token else seq_len, op.weight_bits, op.act_bits)
        flops, binops = flops + f, binops + b
    for att in count.attention:
        f, b = attention_cost(att.layers, att.hidden, seq_len, att.act_bits)
        flops, binops = flops + f, binops + b
    return FlopCount(seq_len, flops, binops)

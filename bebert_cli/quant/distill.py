"""Distillation losses from a full-precision teacher to a binary student.

- logits: soft cross-entropy to the teacher's distribution at temperature T, times T^2
  (+ hard_label_weight x hard CE); MSE to the teacher's score (+ weighted MSE to the label) for
  regression;
- hidden: per-token normalised difference || h_s/|h_s| - h_t/|h_t| || of the matched hidden
  states (`hidden_layers`: all, last, or indices with 0 = the embedding output);
- dmd (BiBERT's Direction-Matching Distillation): for Q, K and V of every layer, the similarity
  matrices P = F F^T / sqrt(d_head) per head, padded positions zeroed, rows normalised, and the
  norm of the student-teacher difference.
With no terms ("--distill none") the student trains on hard labels alone (BEBERT members).
Student layers map uniformly onto teacher layers when their depths differ.
Rows flagged `augmented` (made by `bebert_cli.augment`) have no trustworthy label: the hard-label
term skips them and they learn from the teacher alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bebert_cli.errors import UsageError
from bebert_cli.families import encoder_layers, family
from bebert_cli.quant.recipes import parse_hidden_layers

AUGMENTED = "augmented"  # batch key: 1 for a row made by augmentation (no hard label)


def _normalised_diff(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid rows of || s/|s| - t/|t| ||_2 along the last dimension."""
    d = (F.normalize(s.float(), dim=-1) - F.normalize(t.float(), dim=-1)).norm(dim=-1)
    return (d * mask).sum() / mask.sum().clamp_min(1)


class _Capture:
    """Forward hooks that keep the outputs of the Q, K, V projections of every layer."""

    def __init__(self, model):
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.handles = []
        names = family(model.config).qkv
        for i, layer in enumerate(encoder_layers(model)):
            for j, name in enumerate(names):
                self.handles.append(layer.get_submodule(name).register_forward_hook(self._hook(i, j)))
        self.heads = getattr(model.config, family(model.config).heads_key)

    def _hook(self, i, j):
        def hook(module, args, output):
            self.outputs[(i, j)] = output

        return hook

    def pop(self) -> dict:
        out, self.outputs = self.outputs, {}
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def _similarity(f: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    b, length, width = f.shape
    f = f.float().view(b, length, heads, width // heads).transpose(1, 2)  # B, H, L, D
    p = f @ f.transpose(-1, -2) / math.sqrt(width // heads)
    m = mask[:, None, :, None] * mask[:, None, None, :]
    return p * m


class Distiller:
    def __init__(self, student, teacher, terms: tuple[str, ...], *, regression: bool, hard_label_weight: float = 0.5,
                 temperature: float = 1.0, hidden_layers: str = "all"):
        self.teacher, self.terms, self.regression, self.hard_w = teacher, set(terms), regression, hard_label_weight
        self.temperature = temperature
        s_layers, t_layers = len(encoder_layers(student)), len(encoder_layers(teacher)) if teacher is not None else 0
        if self.terms and teacher is None:
            raise UsageError("distillation needs a teacher")
        if self.terms & {"hidden", "dmd"}:
            s_width, t_width = (getattr(m.config, family(m.config).hidden_key) for m in (student, teacher))
            if s_width != t_width:
                raise UsageError(f"--distill hidden/dmd need equal widths (student {s_width}, teacher {t_width}); use --distill logits")
        # student layer i imitates teacher layer map[i] (uniform when depths differ)
        self.layer_map = [((i + 1) * t_layers) // max(1, s_layers) - 1 for i in range(s_layers)]
        # (student, teacher) hidden-state indices; hidden_states[0] is the embedding output.
        pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.layer_map)]
        chosen = parse_hidden_layers(hidden_layers)
        if chosen == "last":
            pairs = pairs[-1:]
        elif chosen != "all":
            if max(chosen) > s_layers:
                raise UsageError(f"--hidden-layers {hidden_layers}: the student has hidden states 0..{s_layers}")
            pairs = [pairs[i] for i in sorted(set(chosen))]
        self.hidden_pairs = pairs
        self.s_cap = _Capture(student) if "dmd" in self.terms else None
        self.t_cap = _Capture(teacher) if "dmd" in self.terms else None

    def close(self):
        for c in (self.s_cap, self.t_cap):
            if c is not None:
                c.remove()

    def _hard(self, logits, labels, labelled=None):
        if self.regression:
            per_row = F.mse_loss(logits.view(-1).float(), labels.float(), reduction="none")
        else:
            per_row = F.cross_entropy(logits.float(), labels, reduction="none")
        if labelled is None:
            return per_row.mean()
        # Mean over the labelled rows only; zero (not NaN) for a batch of augmented rows.
        return (per_row * labelled).sum() / labelled.sum().clamp_min(1)

    def __call__(self, model, batch):
        labels = batch["labels"]
        augmented = batch.get(AUGMENTED)
        labelled = None if augmented is None else (augmented == 0).float()
        inputs = {k: v for k, v in batch.items() if k not in ("labels", AUGMENTED)}
        want_hidden = "hidden" in self.terms
        out = model(**inputs, output_hidden_states=want_hidden)
        logs: dict[str, float] = {}
        if not self.terms:
            if labelled is not None:
                raise UsageError("augmented rows need distillation (a teacher's soft labels); use --distill logits,...")
            loss = self._hard(out.logits, labels)
            logs["hard"] = loss.item()
            return loss, logs
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=want_hidden)
        mask = inputs["attention_mask"].float()
        loss = torch.zeros((), device=out.logits.device)
        if "logits" in self.terms:
            if self.regression:
                soft = F.mse_loss(out.logits.float(), t_out.logits.float())
            else:
                t = self.temperature
                soft = -(F.softmax(t_out.logits.float() / t, -1) * F.log_softmax(out.logits.float() / t, -1)).sum(-1).mean()
                soft = soft * (t * t)  # keeps the gradient scale independent of T (Hinton et al.)
            loss = loss + soft + self.hard_w * self._hard(out.logits, labels, labelled)
            logs["logits"] = soft.item()
        if want_hidden:
            h = sum(_normalised_diff(out.hidden_states[s], t_out.hidden_states[t], mask) for s, t in self.hidden_pairs)
            loss = loss + h
            logs["hidden"] = float(h.detach())
        if self.s_cap is not None:
            s_f, t_f = self.s_cap.pop(), self.t_cap.pop()
            valid = mask[:, None, :].expand(-1, self.s_cap.heads, -1)
            d = 0.0
            for (i, j), f in s_f.items():
                ps = _similarity(f, self.s_cap.heads, mask)
                pt = _similarity(t_f[(self.layer_map[i], j)], self.t_cap.heads, mask)
                d = d + _normalised_diff(ps, pt, valid)
            loss = loss + d
            logs["dmd"] = float(d.detach())
        return loss, logs

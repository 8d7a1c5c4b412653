"""Whether transformers is recording what modules inside the encoder layers return.

transformers 5 collects `output_attentions` / other inner outputs through forward hooks and a
context variable (`utils.output_capturing`). The packed runtime's shortcuts (the fused layers,
the in-place softmax attention) skip or overwrite what such a recording would read, so they ask here
first. Unknown transformers internals count as "recording": the shortcut is then not taken.
"""

from __future__ import annotations


def collecting_inner_outputs() -> bool:
    """Whether transformers is recording outputs of modules inside the layers (e.g. attentions)."""
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:
        return True
    collected = _active_collector.get()
    return collected is not None and any(k not in ("hidden_states", "_hidden_states_layers") for k in collected)

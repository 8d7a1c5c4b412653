# Written by `bebert export --format remote-code`. Standalone: needs only torch + transformers + safetensors.
"""Configuration of a bebert binary BERT-family classifier (model_type "bebert").

`base_config` is the original architecture's config (model_type bert, roberta, electra or distilbert);
`bebert_quantization` says what is binarized and how (bebert's packed-format `quantization_config`, kept
under another name so that transformers does not look for a quantizer of its own).
"""

from __future__ import annotations

try:
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers < 5
    from transformers import PretrainedConfig as _BaseConfig


class BebertConfig(_BaseConfig):
    model_type = "bebert"

    def __init__(self, base_config: dict | None = None, bebert_quantization: dict | None = None, **kwargs):
        self.base_config = dict(base_config or {})
        self.bebert_quantization = dict(bebert_quantization or {})
        for key in ("id2label", "label2id", "problem_type"):  # pipelines read these at the top level
            if key not in kwargs and key in self.base_config:
                kwargs[key] = self.base_config[key]
        super().__init__(**kwargs)

"""The standalone modeling code that `bebert export` copies into dense and remote-code exports.

Its modules import only torch, transformers and safetensors (never bebert_cli), so an exported
directory runs where bebert is not installed.
"""

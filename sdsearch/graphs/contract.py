"""The contract between deployed files and their readers: file names, graph input and output names,
metadata keys. Torch-free, so ``sdsearch predict`` and anything reading a run folder import nothing heavy.
"""

from __future__ import annotations

__all__ = ["DEPLOY_FILES", "INPUT_LAYOUT", "INPUT_NAME", "METADATA_KEYS", "OUTPUT_NAME"]

#: The deployed-model files of a run folder, by precision (``pt2`` is float32 torch.export).
DEPLOY_FILES = {"float32": "model.onnx", "int8": "model.int8.onnx", "pt2": "model.pt2"}
#: Input and output names of every deployed graph.
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
#: ``metadata_props`` keys of a deployed ONNX graph; every value is JSON.
METADATA_KEYS = ("mean", "std", "input_layout", "classes", "exit", "precision", "sdsearch_version")
#: The ``input_layout`` metadata value.
INPUT_LAYOUT = "NHWC uint8 (0-255); the graph computes (x / 255 - mean) / std per channel"

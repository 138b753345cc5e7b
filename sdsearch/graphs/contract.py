"""The contract between deployed files and their readers: file names, graph input and output names,
metadata keys, the int8 .tflite's input quantization. Torch-free, so ``sdsearch predict`` and anything
reading a run folder import nothing heavy.
"""

from __future__ import annotations

__all__ = [
    "DEPLOY_FILES",
    "FIRMWARE_FILES",
    "INPUT_LAYOUT",
    "INPUT_NAME",
    "INPUT_SCALE",
    "INPUT_ZERO_POINT",
    "METADATA_KEYS",
    "OUTPUT_NAME",
    "TFLITE_INPUT_LAYOUT",
]

#: The deployed-model files of a run folder: by precision (``pt2`` is float32 torch.export), and the
#: int8 .tflite for TensorFlow Lite Micro (``tflite``; a static exit, with the ``mcu`` extra).
DEPLOY_FILES = {
    "float32": "model.onnx",
    "int8": "model.int8.onnx",
    "pt2": "model.pt2",
    "tflite": "model.int8.tflite",
}
#: The .tflite as C++ source for a firmware build, written beside it: the header, then the array.
FIRMWARE_FILES = ("model_data.h", "model_data.cc")
#: Input and output names of every deployed graph.
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
#: ``metadata_props`` keys of a deployed ONNX graph; every value is JSON.
METADATA_KEYS = ("mean", "std", "input_layout", "classes", "exit", "precision", "sdsearch_version")
#: The ``input_layout`` metadata value.
INPUT_LAYOUT = "NHWC uint8 (0-255); the graph computes (x / 255 - mean) / std per channel"
#: The .tflite's int8 input quantization: ``q = round(pixel / INPUT_SCALE) + INPUT_ZERO_POINT = pixel - 128``.
INPUT_SCALE = 1.0
INPUT_ZERO_POINT = -128
#: How the .tflite is fed, for its readers (metrics.json, ``model_data.h``).
TFLITE_INPUT_LAYOUT = (
    f"NHWC int8 (1, H, W, C), q = pixel - {-INPUT_ZERO_POINT} for pixels 0-255 (scale {INPUT_SCALE:g}, "
    f"zero point {INPUT_ZERO_POINT}); the graph computes (x / 255 - mean) / std per channel"
)

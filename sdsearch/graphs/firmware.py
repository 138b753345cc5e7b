"""A .tflite as C++ sources a firmware build compiles in: ``model_data.h`` and ``model_data.cc``.

The header declares the model array and holds every number the application needs to run it:
``kTensorArenaSize``, the input's shape and quantization, the output's quantization and the class
names; the source defines the array, 16-byte aligned as TFLite Micro wants its flatbuffer. Both
compile as C++17 (``g++ -std=c++17 -c model_data.cc``). The layout and normalisation of the input
are said in the header's comment, from :data:`~sdsearch.graphs.contract.TFLITE_INPUT_LAYOUT`.

Example:
    >>> sources = firmware_sources(model, arena_bytes=15216, arena_source="measured",
    ...                            classes=["0", "1"], exit="final")              # doctest: +SKIP
    >>> sorted(sources)                                                          # doctest: +SKIP
    ['model_data.cc', 'model_data.h']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdsearch.graphs.contract import DEPLOY_FILES, FIRMWARE_FILES, INPUT_ZERO_POINT, TFLITE_INPUT_LAYOUT
from sdsearch.graphs.tflm import ARENA_STEP, TensorSpec, tflite_io, tflm_ops

__all__ = ["NAMESPACE", "c_string", "firmware_sources"]

#: The C++ namespace of every name the files declare.
NAMESPACE = "sdsearch_model"
_BYTES_PER_LINE = 16


def firmware_sources(
    model: bytes,
    *,
    arena_bytes: int,
    arena_source: str,
    classes: Sequence[str] | None,
    exit: str,
    version: str = "",
) -> dict[str, str]:
    """``model_data.h`` and ``model_data.cc`` of an int8 .tflite, by file name.

    Args:
        model: the .tflite flatbuffer (:func:`sdsearch.graphs.tflite.int8_tflite`).
        arena_bytes: ``kTensorArenaSize``; rounded up to TFLite Micro's 16-byte alignment.
        arena_source: where that figure comes from, one line for the header's comment.
        classes: class names in index order (None: the indices are the names).
        exit: the deployed exit, for the header's comment.
        version: the writing sdsearch's version, for the header's comment.
    """
    header, source = FIRMWARE_FILES
    inp, out = tflite_io(model)
    names = list(classes) if classes else [str(i) for i in range(out.shape[-1])]
    if len(names) != out.shape[-1]:
        raise ValueError(f"{len(names)} class names for a model with {out.shape[-1]} outputs")
    _check_pixel_input(inp)
    arena = -(-arena_bytes // ARENA_STEP) * ARENA_STEP
    return {
        header: _header(
            inp,
            out,
            names,
            len(model),
            arena=arena,
            arena_source=arena_source,
            exit=exit,
            version=version,
            ops=tflm_ops(model),
        ),
        source: _source(model, names, header),
    }


def _header(
    inp: TensorSpec,
    out: TensorSpec,
    classes: list[str],
    size: int,
    *,
    arena: int,
    arena_source: str,
    exit: str,
    version: str,
    ops: dict[str, int],
) -> str:
    _, height, width, channels = inp.shape
    by = f"sdsearch {version}".strip()
    lines = [
        f"// {FIRMWARE_FILES[0]}: {DEPLOY_FILES['tflite']} (exit {_comment(exit)}) for TensorFlow Lite Micro,",
        f"// written by {by} (`sdsearch train`); the array is in {FIRMWARE_FILES[1]}.",
        "//",
        f"// Input:  {_comment(TFLITE_INPUT_LAYOUT)}.",
        "//         Feed raw pixels: normalisation is inside the graph, and round(pixel / kInputScale)",
        "//         + kInputZeroPoint is pixel - 128 for every pixel 0-255.",
        "// Output: int8 logits (1, kNumClasses); logit = (q - kOutputZeroPoint) * kOutputScale, class = argmax.",
        f"// kTensorArenaSize: {_comment(arena_source)}.",
        f"// Ops to register (tflite::MicroMutableOpResolver<{len(ops)}>): "
        + ", ".join(f"{name} x{count}" for name, count in ops.items())
        + ".",
        "#pragma once",
        "",
        f"namespace {NAMESPACE} {{",
        "",
        f"constexpr unsigned int kModelDataLen = {size};",
        f"extern const unsigned char kModelData[kModelDataLen];  // alignas({ARENA_STEP}) in the definition",
        "",
        f"constexpr int kTensorArenaSize = {arena};",
        "",
        f"constexpr int kInputHeight = {height};",
        f"constexpr int kInputWidth = {width};",
        f"constexpr int kInputChannels = {channels};",
        f"constexpr float kInputScale = {_c_float(inp.scale)};",
        f"constexpr int kInputZeroPoint = {inp.zero_point};",
        f"constexpr float kOutputScale = {_c_float(out.scale)};",
        f"constexpr int kOutputZeroPoint = {out.zero_point};",
        "",
        f"constexpr int kNumClasses = {len(classes)};",
        "extern const char* const kClassNames[kNumClasses];",
        "",
        f"}}  // namespace {NAMESPACE}",
    ]
    return "\n".join(lines) + "\n"


def _source(model: bytes, classes: list[str], header: str) -> str:
    """The array and the class names; including the header first gives both external linkage."""
    data = np.frombuffer(model, dtype=np.uint8)
    rows = [
        "    " + " ".join(f"0x{b:02x}," for b in data[i : i + _BYTES_PER_LINE])
        for i in range(0, len(data), _BYTES_PER_LINE)
    ]
    names = [f"    {c_string(name)}," for name in classes]
    return "\n".join([f'#include "{header}"', "", f"namespace {NAMESPACE} {{", "",
                      f"alignas({ARENA_STEP}) const unsigned char kModelData[kModelDataLen] = {{", *rows, "};", "",
                      "const char* const kClassNames[kNumClasses] = {", *names, "};", "",
                      f"}}  // namespace {NAMESPACE}", ""])  # fmt: skip


def _check_pixel_input(inp: TensorSpec) -> None:
    """The header promises ``q = pixel - 128``; refuse a .tflite whose input quantizes pixels otherwise."""
    pixels = np.arange(256)
    q = np.round(pixels / inp.scale) + inp.zero_point if inp.scale > 0 else None
    expected = pixels + INPUT_ZERO_POINT  # INPUT_SCALE is 1
    if inp.dtype != "int8" or len(inp.shape) != 4 or q is None or not np.array_equal(q, expected):
        raise ValueError(f"the .tflite's input is not int8 NHWC pixels q = pixel - 128: {inp}")


def c_string(text: str) -> str:
    """``text`` as a C/C++ string literal: UTF-8, with quotes, backslashes and every byte outside
    printable ASCII escaped (octal, so no following character can extend an escape)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """``text`` safe inside a ``//`` comment: one line of printable ASCII."""
    return "".join(c if " " <= c < "\x7f" else "?" for c in text)


def _c_float(value: float) -> str:
    """A float32 as a C++ literal that reads back to the same float32."""
    return np.format_float_scientific(np.float32(value), unique=True, trim="-") + "f"

"""Files a trained model leaves behind: the deployed exit as ONNX (fp32, int8), torch.export and an
int8 .tflite with its C++ sources, and checkpoints.

Every deployed file takes raw pixels: uint8 ``(N, H, W, C)``, or int8 ``pixel - 128`` for the
.tflite; the input preprocessing is part of the graph (:mod:`sdsearch.graphs`). Exports run on the
CPU in eval mode, so they run anywhere. The file names are
:data:`sdsearch.graphs.contract.DEPLOY_FILES` and :data:`~sdsearch.graphs.contract.FIRMWARE_FILES`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sdsearch.core.files import write_atomic
from sdsearch.graphs.contract import DEPLOY_FILES, INPUT_LAYOUT

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

__all__ = [
    "save_deploy_models",
    "save_firmware",
    "save_tflite",
]

PathLike = str | os.PathLike[str]


def save_deploy_models(
    module: nn.Module,
    out_dir: PathLike,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    input_shape: tuple[int, int, int],
    calibration: np.ndarray,
    classes: Sequence[str] | None,
    exit: str,
) -> dict[str, Path]:
    """Write ``model.onnx`` (fp32), ``model.int8.onnx`` (static int8) and ``model.pt2`` for a deploy module.

    Args:
        module: the deploy module (``net.deploy(exit)``), on the CPU in float32.
        out_dir: an existing folder.
        mean, std: the training split's per-channel statistics (``Dataset.mean`` / ``.std``).
        input_shape: ``(C, H, W)``.
        calibration: uint8 NCHW training images that calibrate the int8 graph.
        classes: class names, index order (None: the indices are the names).
        exit: the deployed exit, recorded in the metadata.

    Returns:
        :data:`DEPLOY_FILES` keys -> the written paths.

    Raises:
        DiskFullError: a file did not fit on its disk (no truncated file is left).

    Example:
        >>> save_deploy_models(deploy, "runs/best", mean=data.mean, std=data.std, input_shape=(1, 8, 8),
        ...                    calibration=data.x_train[:256], classes=data.classes, exit="final")  # doctest: +SKIP
    """
    import torch

    from sdsearch import __version__
    from sdsearch.graphs.onnx import onnx_graphs, set_metadata
    from sdsearch.graphs.pt2 import export_pt2

    out = Path(out_dir)
    graphs = onnx_graphs(module, mean=mean, std=std, input_shape=input_shape, calibration=calibration)
    paths = {}
    for precision, graph in graphs.items():
        set_metadata(graph, {"mean": list(mean), "std": list(std), "input_layout": INPUT_LAYOUT,
                             "classes": list(classes) if classes else None, "exit": exit,
                             "precision": precision, "sdsearch_version": __version__})  # fmt: skip
        paths[precision] = write_atomic(out / DEPLOY_FILES[precision], graph.SerializeToString())
    # From memory: torch.export.save writing to a file aborts the whole process (a C++ terminate)
    # when that file's disk fills up; a write_atomic of its bytes raises DiskFullError instead.
    buffer = io.BytesIO()
    torch.export.save(export_pt2(module, mean=mean, std=std, input_shape=input_shape), buffer)
    paths["pt2"] = write_atomic(out / DEPLOY_FILES["pt2"], buffer.getvalue())
    return paths


def save_tflite(
    module: nn.Module,
    out_dir: PathLike,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    input_shape: tuple[int, int, int],
    calibration: np.ndarray,
) -> bytes:
    """Write ``model.int8.tflite``, the full-integer int8 .tflite of a deploy module, and return its bytes.

    Arguments as :func:`save_deploy_models`; ``calibration`` should be the images that calibrated
    ``model.int8.onnx``, so the two int8 files agree. Needs the ``mcu`` extra.
    """
    from sdsearch.graphs.tflite import int8_tflite

    model = int8_tflite(module, mean=mean, std=std, input_shape=input_shape, calibration=calibration)
    write_atomic(Path(out_dir) / DEPLOY_FILES["tflite"], model)
    return model


def save_firmware(
    model: bytes,
    out_dir: PathLike,
    *,
    arena_bytes: int,
    arena_source: str,
    classes: Sequence[str] | None,
    exit: str,
) -> dict[str, Path]:
    """Write ``model_data.h`` and ``model_data.cc``: the .tflite ``model`` as C++ for a firmware build.

    Args:
        model: the bytes of ``model.int8.tflite``.
        out_dir: an existing folder.
        arena_bytes: ``kTensorArenaSize``; ``arena_source`` says where it comes from, in the header.
        classes, exit: as :func:`save_deploy_models`.

    Returns:
        File name -> the written path.
    """
    from sdsearch import __version__
    from sdsearch.graphs.firmware import firmware_sources

    sources = firmware_sources(model, arena_bytes=arena_bytes, arena_source=arena_source, classes=classes,
                               exit=exit, version=__version__)  # fmt: skip
    return {name: write_atomic(Path(out_dir) / name, text) for name, text in sources.items()}

"""Files a trained model leaves behind: TorchScript and ONNX of a deploy module, and checkpoints.

Deploy modules (``SelfDistillNet.deploy(exit)``) take normalised float images ``(N, C, H, W)`` and
return that exit's logits. Exports are traced on the CPU in eval mode so they run anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "onnx_available",
    "save_checkpoint",
    "save_onnx",
    "save_torchscript",
]

CHECKPOINT_FORMAT = "sdsearch-checkpoint/1"

PathLike = str | os.PathLike[str]


def save_torchscript(module: nn.Module, example: torch.Tensor, path: PathLike) -> Path:
    """Trace ``module`` (in eval mode, no grad) on ``example`` and save it as TorchScript.

    Tracing records the ops run on ``example``; deploy modules have no data-dependent control
    flow, so the trace is exact for any batch size. Loading needs only ``torch.jit.load``.

    Example:
        >>> save_torchscript(net.deploy("final"), torch.zeros(1, 3, 32, 32), "model.ts")  # doctest: +SKIP
    """
    path = Path(path)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TODO: move to torch.export (.pt2) once edge runtimes load it; torch 2.9+ marks
        # torch.jit.trace deprecated, but TorchScript is still what mobile/C++ runtimes read.
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.trace")
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))
    return path


def onnx_available() -> bool:
    """Whether the ``onnx`` package (the ``export`` extra) is installed."""
    return importlib.util.find_spec("onnx") is not None


def save_onnx(module: nn.Module, example: torch.Tensor, path: PathLike) -> str:
    """Export ``module`` to ONNX when ``onnx`` is installed, with a dynamic batch dimension.

    Returns:
        What happened, for metrics: ``"written"``, ``"skipped: ..."`` (onnx missing) or
        ``"failed: ..."`` (the exporter raised; the run's other artifacts are still good).
    """
    if not onnx_available():
        return "skipped: onnx is not installed (pip install 'sdsearch[export]')"
    module.eval()
    # The dynamo exporter needs onnxscript; the TorchScript-based one needs only onnx.
    dynamo = importlib.util.find_spec("onnxscript") is not None
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"], "dynamo": dynamo}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter; failures still raise
            torch.onnx.export(module, (example,), str(path), **kwargs)
    except Exception as exc:  # an exporter bug must not lose a finished training run
        warnings.warn(f"ONNX export to {path} failed: {exc}", RuntimeWarning, stacklevel=2)
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "written"


def save_checkpoint(
    path: PathLike, *, state_dict: dict[str, Any], config: dict[str, Any], **extra: Any
) -> Path:
    """Save a training network's ``state_dict`` with the config that builds it.

    Everything stored is tensors or plain Python values, so :func:`load_checkpoint` can use
    ``torch.load(weights_only=True)`` (no pickled code is ever executed on load).

    Args:
        path: file to write (conventionally ``checkpoint.pt``).
        state_dict: ``net.state_dict()`` (tensors are moved to CPU).
        config: ``TrialConfig.to_dict()``.
        **extra: more plain values, e.g. ``loss_state_dict``, ``mean``, ``std``, ``shape``.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }
    torch.save(payload, path)
    return path


def load_checkpoint(path: PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Example:
        >>> ckpt = load_checkpoint("runs/best/checkpoint.pt")                       # doctest: +SKIP
        >>> cfg = TrialConfig.from_dict(ckpt["config"])                           # doctest: +SKIP
        >>> net = SelfDistillNet(cfg.model, num_classes=10); net.load_state_dict(ckpt["state_dict"])  # doctest: +SKIP

    Raises:
        ValueError: the file is not an sdsearch checkpoint.
    """
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an sdsearch checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload

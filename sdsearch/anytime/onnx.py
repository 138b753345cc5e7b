"""ONNX export of an anytime model: the exits' decisions as ``If`` nodes, thresholds in metadata.

The exported graph takes ONE image (batch 1, the streaming case of an edge device) and returns the
logits ``(1, num_classes)`` of the first confident exit and that exit's index ``(1,)`` (int64, into
the ``exits`` metadata). Each shallow exit is an ONNX ``If``: the condition is
``ReduceMax(Softmax(logits)) > threshold``; its then-branch returns the exit's logits, its
else-branch holds the rest of the trunk, so a runtime executes only the segments an image needs. The
graph comes from ``torch.cond`` through the dynamo exporter (it needs ``onnxscript``).

With ``mean`` and ``std`` the graph takes what a camera gives, uint8 pixels ``(1, H, W, C)`` named
``pixels``, and computes the training normalisation itself (:class:`sdsearch.graphs.preprocess.Preprocess`), like the
static exports; without them it takes the normalised float32 ``(1, C, H, W)`` named ``input``.

Metadata (``metadata_props``, every value JSON): ``exit`` (``"anytime"``), :data:`EXITS_KEY`,
:data:`THRESHOLDS_KEY`, :data:`MACS_KEY` (per exit: MACs when leaving there and static deploy MACs;
the worst case), :data:`SEMANTICS_KEY`, and with preprocessing ``mean``, ``std`` and
``input_layout``, the keys of the static exports.

Example:
    >>> save_anytime_onnx(model, "anytime.onnx", input_shape=(3, 32, 32), mean=data.mean, std=data.std)  # doctest: +SKIP
    'written'
    >>> logits, exits = run_anytime_onnx("anytime.onnx", x_test.transpose(0, 2, 3, 1))                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sdsearch.anytime.model import AnytimeModel, exit_confidence
from sdsearch.anytime.policy import AnytimeCost
from sdsearch.core.exits import ANYTIME
from sdsearch.core.files import write_atomic
from sdsearch.graphs.contract import INPUT_LAYOUT, INPUT_NAME, OUTPUT_NAME
from sdsearch.graphs.onnx import NETWORK_INPUT
from sdsearch.graphs.preprocess import Preprocess
from sdsearch.graphs.runtime import onnx_session

__all__ = [
    "EXITS_KEY",
    "EXIT_OUTPUT",
    "MACS_KEY",
    "SEMANTICS_KEY",
    "THRESHOLDS_KEY",
    "read_anytime_metadata",
    "run_anytime_onnx",
    "save_anytime_onnx",
]

#: The second output: the index (into :data:`EXITS_KEY`) of the exit each image left at.
EXIT_OUTPUT = "exit"
EXITS_KEY = "anytime_exits"
THRESHOLDS_KEY = "anytime_thresholds"
MACS_KEY = "anytime_exit_macs"
SEMANTICS_KEY = "anytime_semantics"
#: The ``input_layout`` value with preprocessing folded in (the static exports' wording).
_SEMANTICS = (
    "batch 1; outputs 'logits' (1, classes) of the first shallow exit whose max softmax probability is "
    "strictly greater than its threshold, else of the final exit, and 'exit' (1,) int64, its index in "
    "anytime_exits"
)


class _AnytimeGraph(nn.Module):
    """Batch-1 form of :class:`AnytimeModel` with its decisions as nested ``torch.cond``."""

    def __init__(self, model: AnytimeModel, preprocess: nn.Module | None) -> None:
        super().__init__()
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.trunk, self.heads = model.trunk, model.heads
        self.register_buffer("thresholds", model.thresholds.clone())

    def _from(self, k: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk[k](h)
        z = self.heads[k](h)
        index = torch.full((1,), k, dtype=torch.int64)
        if k == len(self.trunk) - 1:
            return z, index

        def leave(h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return z.clone(), index.clone()  # a cond branch may not return its inputs

        def go_on(h: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._from(k + 1, h)

        return torch.cond(exit_confidence(z)[0] > self.thresholds[k], leave, go_on, (h, z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._from(0, self.preprocess(x))


def save_anytime_onnx(
    model: AnytimeModel,
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cost: AnytimeCost | None = None,
) -> str:
    """Export ``model`` (batch 1, on the CPU, eval mode) to ONNX with its thresholds in the graph.

    Args:
        model: the anytime model (its weights are copied to the CPU for the export).
        path: the ``.onnx`` file to write.
        input_shape: ``(C, H, W)`` of one image, as the network sees it.
        mean, std: the training split's normalisation (``Dataset.mean`` / ``.std``): folded into the
            graph, which then takes uint8 pixels ``(1, H, W, C)``; both or neither.
        cost: the per-exit MACs to record in the metadata.

    Returns:
        What happened, for metrics: ``"written"``, ``"skipped: ..."`` (onnx or onnxscript missing)
        or ``"failed: ..."`` (the exporter raised; a warning says why).
    """
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return f"skipped: {' and '.join(missing)} not installed (pip install {' '.join(missing)})"
    import onnx

    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (uint8 pixels in) or neither (normalised floats in)")
    c, h, w = input_shape
    meta: dict[str, Any] = {"exit": ANYTIME}
    if mean is not None and std is not None:
        preprocess: nn.Module | None = Preprocess(mean, std)
        example, input_name = torch.zeros((1, h, w, c), dtype=torch.uint8), INPUT_NAME
        meta |= {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "input_layout": INPUT_LAYOUT,
        }
    else:
        preprocess, example, input_name = None, torch.zeros((1, c, h, w)), NETWORK_INPUT
    graph = _AnytimeGraph(_cpu_copy(model), preprocess).eval()
    try:
        with (
            torch.no_grad(),
            _quiet_exporter(),
            tempfile.TemporaryDirectory(prefix="sdsearch-anytime-") as tmp,
        ):
            scratch = Path(tmp) / "anytime.onnx"  # exported aside, then written whole (see write_atomic)
            torch.onnx.export(graph, (example,), str(scratch), dynamo=True, input_names=[input_name],
                              output_names=[OUTPUT_NAME, EXIT_OUTPUT], verbose=False, external_data=False)  # fmt: skip
            proto = onnx.load(str(scratch))
    except Exception as exc:  # an exporter bug must not lose a finished training run
        warnings.warn(f"anytime ONNX export to {path} failed: {exc}", RuntimeWarning, stacklevel=2)
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    _localise_initializers(proto.graph)
    meta |= {
        EXITS_KEY: list(model.exits),
        THRESHOLDS_KEY: dict(zip(model.exits[:-1], model.thresholds.tolist(), strict=True)),
        SEMANTICS_KEY: _SEMANTICS,
    }
    if cost is not None:
        meta[MACS_KEY] = {"leave": dict(zip(cost.exits, cost.leave, strict=True)),
                          "deploy": dict(zip(cost.exits, cost.deploy, strict=True)),
                          "worst_case": cost.worst_case}  # fmt: skip
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    write_atomic(path, proto.SerializeToString())
    return "written"


def read_anytime_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of an exported anytime model, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: json.loads(entry.value) for entry in proto.metadata_props}


def run_anytime_onnx(path: str | os.PathLike[str], images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported anytime model with ONNX Runtime on each image, one at a time.

    Args:
        path: the ``.onnx`` file.
        images: ``(N, ...)`` in the graph's input format (e.g. uint8 NHWC with preprocessing).

    Returns:
        The logits ``(N, num_classes)`` and exit indices ``(N,)`` ONNX Runtime computed.
    """
    session = onnx_session(Path(path), threads=1)
    name = session.get_inputs()[0].name
    logits, exits = [], []
    for image in images:
        z, e = session.run([OUTPUT_NAME, EXIT_OUTPUT], {name: np.ascontiguousarray(image[None])})
        logits.append(z[0])
        exits.append(e[0])
    return np.stack(logits), np.asarray(exits, dtype=np.int64)


def _cpu_copy(model: AnytimeModel) -> AnytimeModel:
    """A CPU copy of ``model`` in eval mode (the original stays where it is, in its mode)."""
    return copy.deepcopy(model).cpu().eval()


def _localise_initializers(graph: Any) -> int:
    """Move every initializer that only one ``If`` branch uses into that branch, recursively.

    Initializers that nothing reads (the exporter leaves a few) are dropped, as ONNX Runtime does
    when it loads the model.

    The exporter leaves every weight in the main graph, where the branches read them from the outer
    scope. ONNX Runtime pre-packs conv weights, fuses Conv + activation and switches to its blocked
    (NCHWc) layout only for initializers of the graph that runs the conv, so the trunk segments
    inside the branches ran unoptimised: with every exit running, ResNet width 0.25 at 32x32 took
    620 us per image instead of 400 us (380 us for the same exits without any If), on one thread.

    Returns:
        How many initializers moved.
    """
    direct = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    branches = [g for node in graph.node for g in _branches(node)]
    used = [_names_used(g) for g in branches]
    order = [init.name for init in graph.initializer]
    stay = {init.name: init for init in graph.initializer}
    moved = 0
    for name in order:
        if name in direct:
            continue
        holders = [k for k, names in enumerate(used) if name in names]
        if len(holders) == 1:
            branches[holders[0]].initializer.append(stay.pop(name))
            moved += 1
        elif not holders:
            del stay[name]
    kept = [stay[name] for name in order if name in stay]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return moved + sum(_localise_initializers(g) for g in branches)


def _branches(node: Any) -> list[Any]:
    """The subgraphs of a node (an If's then/else branches)."""
    out = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def _names_used(graph: Any) -> set[str]:
    """Every value name the nodes of ``graph`` and of its subgraphs read."""
    names = {name for node in graph.node for name in node.input}
    for node in graph.node:
        for g in _branches(node):
            names |= _names_used(g)
    return names


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence exporter chatter (warnings, onnx_ir's pass log); failures still raise."""
    logger = logging.getLogger("onnx_ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)

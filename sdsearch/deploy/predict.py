"""``predict()``: class names and confidences for image files, from the model ``sdsearch train`` wrote.

It runs ``model.onnx`` (or ``model.int8.onnx``) of a run folder in ONNX Runtime. Everything it
needs is in the file: the input size and channels from the graph input, the class names from its
metadata, and the preprocessing inside the graph. Images are read with PIL, converted to the
model's channels (``L`` or ``RGB``) and resized to its height and width.

Example:
    >>> for p in predict("runs/best", ["cat.png"], top=3):   # doctest: +SKIP
    ...     print(p.image, p.classes[0], round(p.confidences[0], 2))
    cat.png cat 0.93
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sdsearch.core.errors import ConfigError, SdsearchError
from sdsearch.data.sources import IMAGE_EXTENSIONS

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["PredictError", "Prediction", "image_paths", "predict", "prediction_rows", "prediction_table"]

PathLike = str | os.PathLike[str]
_BATCH = 64


class PredictError(SdsearchError):
    """A run folder, model file or image cannot be used; the message names the path and the fix.

    Attributes:
        path: the folder or file at fault.
    """

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of one image, most confident first, with softmax confidences."""

    image: str
    classes: tuple[str, ...]
    confidences: tuple[float, ...]
    indices: tuple[int, ...]


def predict(
    run_dir: PathLike,
    images: Sequence[PathLike],
    *,
    int8: bool = False,
    top: int = 1,
    threads: int | None = None,
) -> list[Prediction]:
    """Classify image files (or every image in given folders) with a run folder's exported model.

    Args:
        run_dir: the folder ``sdsearch train --out`` wrote.
        images: image files and folders (a folder stands for its images, sorted by name).
        int8: use ``model.int8.onnx`` instead of ``model.onnx``.
        top: how many classes to give per image.
        threads: ONNX Runtime intra-op threads (default: its own choice).

    Returns:
        One :class:`Prediction` per image, in the order given.

    Raises:
        PredictError: (exit 2) the run folder or model file is missing or unreadable, an image
            cannot be read, or a folder holds no images.
        ConfigError: ``top`` is below 1.
    """
    from sdsearch.graphs.contract import DEPLOY_FILES, INPUT_NAME

    if top < 1:
        raise ConfigError(f"must be >= 1, got {top}", key="top")
    session, classes = _load(_model_file(run_dir, DEPLOY_FILES["int8" if int8 else "float32"]), threads)
    paths = image_paths(images)
    _, h, w, c = session.get_inputs()[0].shape
    mode = {1: "L", 3: "RGB"}[c]
    k = min(top, len(classes))
    out: list[Prediction] = []
    for start in range(0, len(paths), _BATCH):
        batch = paths[start : start + _BATCH]
        pixels = np.stack([_read(p, mode, (w, h)) for p in batch])
        logits = session.run(None, {INPUT_NAME: pixels})[0].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for path, p in zip(batch, probs):
            best = np.argsort(-p, kind="stable")[:k]
            out.append(Prediction(str(path), tuple(classes[i] for i in best),
                                  tuple(float(p[i]) for i in best), tuple(int(i) for i in best)))  # fmt: skip
    return out


def image_paths(items: Sequence[PathLike]) -> list[Path]:
    """The image files named by ``items``: files as given, folders as their images (sorted).

    Raises:
        PredictError: a path does not exist, or a folder has no image files.
    """
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise PredictError(p, f"no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise PredictError(p, "no such file or folder; pass image files or folders of images")
    return paths


def prediction_rows(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    """JSON-ready records: ``{"image", "top": [{"class", "index", "confidence"}, ...]}`` per image."""
    return [
        {
            "image": p.image,
            "top": [
                {"class": c, "index": i, "confidence": s}
                for c, i, s in zip(p.classes, p.indices, p.confidences)
            ],
        }
        for p in predictions
    ]


def prediction_table(predictions: Sequence[Prediction]) -> Any:
    """A rich table: image, class, confidence; the runners-up of ``top > 1`` on the rows below each image."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    table.add_column("image")
    table.add_column("class")
    table.add_column("confidence", justify="right")
    for p in predictions:
        for rank, (name, conf) in enumerate(zip(p.classes, p.confidences)):
            table.add_row(
                p.image if rank == 0 else "", name, f"{conf:.3f}", style=None if rank == 0 else "dim"
            )
    return table


# --------------------------------------------------------------------------------------------------


def _model_file(run_dir: PathLike, name: str) -> Path:
    run = Path(run_dir)
    if not run.exists():
        raise PredictError(run, "no such run folder; pass the folder that sdsearch train --out wrote")
    if not run.is_dir():
        raise PredictError(
            run, "is a file, not a run folder; pass the folder that sdsearch train --out wrote"
        )
    model = run / name
    if not model.is_file():
        raise PredictError(model, f"missing; {_retrain(run)}")
    return model


def _retrain(run: Path) -> str:
    """How to (re)write a run folder's model files."""
    if (run / "config.yaml").is_file():
        return f"write it again with: sdsearch train {run / 'config.yaml'} --out {run}"
    return f"train a model into this folder with: sdsearch train CONFIG --out {run}"


def _load(model: Path, threads: int | None) -> tuple[onnxruntime.InferenceSession, list[str]]:
    """A session on ``model`` and its class names, or PredictError when it is not an sdsearch model."""
    import onnxruntime as ort

    from sdsearch.graphs.contract import INPUT_NAME

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...) for bad files
        reason = " ".join(str(exc).split())[:200]
        raise PredictError(model, f"not a readable ONNX model ({reason}); {_retrain(model.parent)}") from None
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if (shape is None or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)" or len(shape) != 4
            or shape[3] not in (1, 3) or not all(isinstance(d, int) for d in shape[1:])):  # fmt: skip
        got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise PredictError(
            model, f"not an sdsearch model (expected one input {INPUT_NAME} uint8 (N, H, W, 1 or 3), got {got}); "
            f"{_retrain(model.parent)}",
        )  # fmt: skip
    n = session.get_outputs()[0].shape[-1]
    raw = session.get_modelmeta().custom_metadata_map.get("classes")
    try:
        classes = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        raise PredictError(model, f"its classes metadata is not JSON; {_retrain(model.parent)}") from None
    if not classes:
        classes = [str(i) for i in range(n)] if isinstance(n, int) else None
    if classes is None or (isinstance(n, int) and len(classes) != n):
        raise PredictError(
            model, f"its classes metadata does not match its {n} outputs; {_retrain(model.parent)}"
        )
    return session, [str(c) for c in classes]


def _read(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """``path`` as uint8 ``(H, W, C)`` in ``mode``, resized to ``size`` (width, height) when it differs."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            x = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:  # UnidentifiedImageError is an OSError; truncated files too
        reason = " ".join(str(exc).split())
        raise PredictError(
            path, f"cannot read this image ({reason}); pass PNG, JPEG or another format PIL reads"
        ) from None
    return x[:, :, None] if x.ndim == 2 else x

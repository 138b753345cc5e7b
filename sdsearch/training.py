"""``train()``: a fully fixed config -> a trained, deployable model and its metrics on disk.

This is ``sdsearch train CONFIG`` without the argument parsing. It trains on the training split
(the validation split is still carved, for validation accuracy), measures every exit on the
validation and test splits, and writes into ``out``:

    config.yaml       the exact config used (a trainer config: ``sdsearch train`` reads it back)
    metrics.json      val/test accuracy, params, MACs and FLOPs per exit, input normalisation, wall
                      time, epochs, device; per deployed file its size, test accuracy and latency
    checkpoint.pt     the training network's state_dict (+ loss adapters) and the config
    model.onnx        ONNX (fp32) of ``deploy(config.deploy_exit)``
    model.int8.onnx   the same, statically quantized to int8 (calibrated on training images)
    model.pt2         the same in float32, ``torch.export``-ed (``torch.export.load``)

The deployed files take uint8 pixels ``(N, H, W, C)`` and return logits: normalisation is part of
them (:mod:`sdsearch.deploy`). Test accuracies are float32, outside autocast, on every device.
The checkpoint and config.yaml are written before the exports, so a failing export loses no training.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from sdsearch.artifacts import DEPLOY_FILES, save_checkpoint, save_deploy_models
from sdsearch.config import TrialConfig
from sdsearch.data import Dataset, load_dataset
from sdsearch.paths import output_dir, write_atomic
from sdsearch.trainer import EpochReport, FitResult, build, evaluate, fit, resolve_device

__all__ = ["ARTIFACTS", "LATENCY_THREADS", "TrainResult", "train"]

#: Files ``train`` writes.
ARTIFACTS = ("config.yaml", "metrics.json", "checkpoint.pt", *DEPLOY_FILES.values())
#: ONNX Runtime threads for the latency in metrics.json (an edge device's one core, and the search's).
LATENCY_THREADS = 1


@dataclass(frozen=True)
class TrainResult:
    """Where the artifacts went, the metrics written to ``metrics.json``, and the fit itself."""

    out: Path
    metrics: dict[str, Any]
    fit: FitResult


def train(
    config: TrialConfig | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    epochs: int | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train a fixed config and write the deploy model, checkpoint and metrics into ``out``.

    Args:
        config: a :class:`TrialConfig`, or the path of a trainer-config YAML (``sdsearch export``).
        out: output folder (created; existing artifacts in it are overwritten).
        epochs: overrides ``train.epochs``; the written config.yaml records the override.
        progress: show a rich progress bar (epochs, loss, validation accuracy).
        device: training device; default CUDA when available.
        threads: torch threads for training. CPU results are reproducible only at the same thread
            count, so the default is the thread count the search trial used (``provenance.threads``
            of an exported config), else torch's choice.

    Returns:
        The output folder, the metrics and the :class:`~sdsearch.trainer.FitResult`.

    Raises:
        SpaceError: the config file is invalid or still has distributions.
        DataError: the dataset is missing.
        TrainingDivergedError: the loss became NaN or infinite.
        DiskFullError: an artifact did not fit on the disk holding ``out`` (each file is written
            whole or not at all; the message names it).

    Example:
        >>> result = train("best.yaml", out="runs/best", epochs=30)  # doctest: +SKIP
        >>> result.metrics["exits"]["final"]["test_accuracy"]         # doctest: +SKIP
        0.91
    """
    from sdsearch.cost import exit_costs

    cfg, provenance = _resolve_config(config, epochs)
    if threads is None and provenance.get("threads") and resolve_device(device).type == "cpu":
        threads = int(provenance["threads"])  # CPU results are reproducible at the search's thread count
    out_dir = Path(out)
    dev = resolve_device(device)
    started = time.perf_counter()

    data = load_dataset(cfg.data, seed=cfg.seed)
    out_dir = output_dir(out_dir, option="--out")  # after the checks that can fail on bad input
    shape = data.shape
    net, loss = build(cfg, shape)
    with _progress_bar(progress, cfg.train.epochs, cfg.deploy_exit) as report:
        result = fit(net, loss, data, cfg.train, seed=cfg.seed, augment=cfg.data.augment, device=dev,
                     threads=threads, report=report, deploy_exit=cfg.deploy_exit)  # fmt: skip
    # Test accuracy in float32 (no autocast, no TF32) on every device: the deployed files are float32 or int8.
    test = evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std, device=dev, amp=False)

    net.to("cpu", memory_format=torch.contiguous_format).eval()
    loss.to("cpu")
    costs = exit_costs(cfg.model, num_classes=shape.num_classes, in_chans=shape.in_chans,
                       input_size=shape.input_size)  # fmt: skip
    save_checkpoint(
        out_dir / "checkpoint.pt",
        state_dict=net.state_dict(),
        config=cfg.to_dict(),
        loss_state_dict={k: v.detach().cpu() for k, v in loss.state_dict().items()},
        **_input_spec(data),
    )
    _write_config(cfg, out_dir)
    files = _deploy(net, cfg, data, out_dir)
    metrics = _metrics(cfg, data, result, test, costs, dev, files, seconds=time.perf_counter() - started,
                       threads=threads or torch.get_num_threads())  # fmt: skip
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(out=out_dir, metrics=metrics, fit=result)


def _resolve_config(
    config: TrialConfig | str | os.PathLike[str], epochs: int | None
) -> tuple[TrialConfig, Mapping[str, Any]]:
    """The config to train and the provenance block of its file (empty for a TrialConfig)."""
    provenance: Mapping[str, Any] = {}
    if not isinstance(config, TrialConfig):
        from sdsearch.space import load_space

        space = load_space(config)
        config, provenance = space.fixed_config(), space.provenance or {}
    if epochs is not None:
        config = config.replace(train=config.train.replace(epochs=epochs))
    return config, provenance


def _deploy(net: torch.nn.Module, cfg: TrialConfig, data: Dataset, out_dir: Path) -> dict[str, Any]:
    """Write the deployed exit's files; their sizes, ONNX Runtime test accuracy and latency for metrics.json."""
    from sdsearch.deploy import N_CALIBRATION, calibration_images, cpu_deploy, onnx_accuracy, onnx_session
    from sdsearch.latency import onnx_latency

    shape = data.shape
    paths = save_deploy_models(
        cpu_deploy(net, cfg.deploy_exit), out_dir, mean=data.mean, std=data.std,
        input_shape=(shape.in_chans, shape.height, shape.width), classes=data.classes, exit=cfg.deploy_exit,
        calibration=calibration_images(data.x_train, N_CALIBRATION, seed=cfg.seed),
    )  # fmt: skip
    files: dict[str, Any] = {}
    for precision, path in paths.items():
        entry: dict[str, Any] = {"precision": "float32" if precision == "pt2" else precision,
                                 "bytes": path.stat().st_size}  # fmt: skip
        if path.suffix == ".onnx":
            entry["test_accuracy"] = onnx_accuracy(onnx_session(path), data.x_test, data.y_test)
            entry["latency_ms"] = round(onnx_latency(path, threads=LATENCY_THREADS), 4)
        if precision == "int8":
            entry["calibration_images"] = min(N_CALIBRATION, len(data.x_train))
        files[path.name] = entry
    return files


def _input_spec(data: Dataset) -> dict[str, Any]:
    """How to feed the deployed model: the network sees ``(x / 255 - mean) / std``, NCHW float."""
    s = data.shape
    return {"input_shape": [s.in_chans, s.height, s.width], "mean": list(data.mean), "std": list(data.std),
            "num_classes": s.num_classes, "classes": list(data.classes) if data.classes else None}  # fmt: skip


def _metrics(
    cfg: TrialConfig,
    data: Dataset,
    result: FitResult,
    test: dict[str, float],
    costs: dict[str, Any],
    device: torch.device,
    files: dict[str, Any],
    *,
    seconds: float,
    threads: int,
) -> dict[str, Any]:
    exits = {
        name: {
            "val_accuracy": result.val_accuracy.get(name),
            "test_accuracy": test.get(name),
            "params": int(costs[name].params),
            "macs": int(costs[name].macs),
            "flops": int(costs[name].flops),
        }
        for name in test
    }
    deployed = exits[cfg.deploy_exit]
    return {
        "deploy_exit": cfg.deploy_exit,
        "val_accuracy": deployed["val_accuracy"],
        "test_accuracy": deployed["test_accuracy"],
        "params": deployed["params"],
        "macs": deployed["macs"],
        "exits": exits,
        "dataset": data.name,
        "input": _input_spec(data),
        "epochs": cfg.train.epochs,
        "epochs_done": result.epochs_done,
        "train_loss": list(result.train_loss),
        "seconds": round(seconds, 3),
        "train_seconds": round(result.seconds, 3),
        "device": str(device),
        "threads": threads,
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "files": files,
        "latency": _latency_settings(),
    }


def _latency_settings() -> dict[str, Any]:
    """How ``deployed[*].latency_ms`` was measured (:func:`sdsearch.latency.onnx_latency` defaults)."""
    import onnxruntime

    from sdsearch.latency import REPEATS, WARMUP

    return {"runtime": f"onnxruntime {onnxruntime.__version__} CPU", "threads": LATENCY_THREADS, "batch": 1,
            "warmup": WARMUP, "repeats": REPEATS, "statistic": "median"}  # fmt: skip


def _write_config(cfg: TrialConfig, out_dir: Path) -> None:
    """Write the config as a trainer config that ``load_trial_config`` reads back unchanged."""
    from sdsearch.space import config_to_document

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", out_dir.resolve().name) or "model"  # a valid study name
    document = config_to_document(cfg, name=name)
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    write_atomic(out_dir / "config.yaml", text)


@contextmanager
def _progress_bar(
    enabled: bool, epochs: int, deploy_exit: str
) -> Iterator[Callable[[EpochReport], None] | None]:
    """A report callback that advances a rich progress bar, or None when ``enabled`` is False."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))  # fmt: skip
    with Progress(*columns) as bar:
        task = bar.add_task("train", total=epochs, status="")

        def report(rep: EpochReport) -> None:
            status = f"loss {rep.train_loss:.4f}  val acc ({deploy_exit}) {rep.accuracy:.4f}"
            bar.update(task, completed=rep.epoch, status=status)

        yield report

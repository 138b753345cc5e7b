"""``train()``: a fully fixed config -> a trained, deployable model and its metrics on disk.

This is ``sdsearch train CONFIG`` without the argument parsing. It trains on the training split
(the validation split is still carved, for validation accuracy), or with ``full=True`` on the whole
training part, validation images included (the final model, as papers train theirs; its validation
accuracy is then not held out and is written as null). It measures every exit on the test split
and writes into ``out``:

    config.yaml       the exact config used (a trainer config: ``sdsearch train`` reads it back)
    metrics.json      ``trained_on`` (``train`` or ``train+val``), val/test accuracy, params, MACs and
                      FLOPs per exit, input normalisation, wall time, epochs, device; per deployed
                      file its size, test accuracy and latency
    checkpoint.pt     the training network's state_dict (+ loss adapters) and the config
    model.onnx        ONNX (fp32) of ``deploy(config.deploy_exit)``
    model.int8.onnx   the same, statically quantized to int8 (calibrated on training images)
    model.pt2         the same in float32, ``torch.export``-ed (``torch.export.load``)
    model.int8.tflite the same as a full-integer int8 .tflite (the same calibration images), for
                      TensorFlow Lite Micro; a static exit only, with the ``mcu`` extra
    model_data.h/.cc  that .tflite as C++ for a firmware build, with ``kTensorArenaSize``

The deployed files take uint8 pixels ``(N, H, W, C)`` (the .tflite int8 ``pixel - 128``) and return
logits: normalisation is part of them (:mod:`sdsearch.graphs.onnx`). Test accuracies are float32,
outside autocast, on every device. The .tflite runs the test split in TFLite Micro (``tflm`` in
metrics.json: accuracy, agreement with model.int8.onnx, the arena). The checkpoint and config.yaml
are written before the exports, so a failing export loses no training.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml

from sdsearch.core.config import TrialConfig
from sdsearch.core.errors import ConfigError, SdsearchError, SpaceError
from sdsearch.core.exits import ANYTIME
from sdsearch.core.files import output_dir, write_atomic
from sdsearch.core.metrics import METRICS
from sdsearch.core.platforms import MCU_INSTALL, MEASURED_PLATFORM, PLATFORMS, mcu_available
from sdsearch.data.datasets import Dataset, DataShape, load_dataset
from sdsearch.deploy.artifacts import save_deploy_models, save_firmware, save_tflite
from sdsearch.deploy.trained import TrainedTrial, check_same_network, trained_network, trained_trial
from sdsearch.graphs.contract import DEPLOY_FILES, FIRMWARE_FILES, TFLITE_INPUT_LAYOUT
from sdsearch.graphs.tflm import FIGURES
from sdsearch.training.checkpoint import save_checkpoint
from sdsearch.training.fit import EpochReport, FitResult, build, evaluate, fit, resolve_device

__all__ = ["ARTIFACTS", "TRAINED_ON", "TrainResult", "train"]

#: Files ``train`` writes for a static exit with the ``mcu`` extra (without it, all but the .tflite and
#: its C++ sources; an anytime deployment writes ``model.anytime.onnx`` instead of those three).
ARTIFACTS = ("config.yaml", "metrics.json", "checkpoint.pt", *DEPLOY_FILES.values(), *FIRMWARE_FILES)
#: ``trained_on`` in metrics.json, by whether the validation split was held out.
TRAINED_ON = {True: "train", False: "train+val"}


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
    full: bool = False,
    progress: bool = True,
    device: torch.device | str | None = None,
    threads: int | None = None,
    from_study: bool = False,
    storage: str | None = None,
) -> TrainResult:
    """Train a fixed config and write the deploy model, checkpoint and metrics into ``out``.

    Args:
        config: a :class:`TrialConfig`, or the path of a trainer-config YAML (``sdsearch export``).
        out: output folder (created; existing artifacts in it are overwritten).
        epochs: overrides ``train.epochs``; the written config.yaml records the override.
        full: train on train + validation (``trained_on: train+val`` in metrics.json, validation
            accuracy null): the final run once a config is chosen. Epochs stay the config's, so an
            epoch is 1 / (1 - data.val_fraction) times as many steps.
        progress: show a rich progress bar (epochs, loss, validation accuracy).
        device: training device; default CUDA when available.
        threads: torch threads for training. CPU results are reproducible only at the same thread
            count, so the default is the thread count the search trial used (``provenance.threads``
            of an exported config), else torch's choice.
        from_study: do not train: deploy the weights the exported config's trial left in its study
            (:mod:`sdsearch.deploy.trained`; an elastic trial's width sliced out) and write the same
            files; metrics.json's ``from_study`` compares its validation accuracy with the stored one.
        storage: the study's storage URL for ``from_study``, when the exported one is masked or moved.

    Returns:
        The output folder, the metrics and the :class:`~sdsearch.training.fit.FitResult`.

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
    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.graphs.onnx import N_CALIBRATION, calibration_images

    cfg, provenance = _resolve_config(config, epochs)
    if threads is None and provenance.get("threads") and resolve_device(device).type == "cpu":
        threads = int(provenance["threads"])  # CPU results are reproducible at the search's thread count
    out_dir = Path(out)
    dev = resolve_device(device)
    started = time.perf_counter()

    if cfg.elastic:
        _refuse(config, ConfigError(
            "sdsearch train deploys one network; export one width of an elastic trial with "
            "--pick trial:N:EXIT@WIDTH (its plain config at that width), or set it to []",
            key="train.elastic_widths",
        ))  # fmt: skip
    trained = None
    if from_study:
        if epochs is not None or full:
            raise ConfigError("deploys the trial as it was trained; --epochs and --full train anew: drop them, "
                              "or drop --from-study", key="from_study")  # fmt: skip
        try:
            trained = trained_trial(provenance, storage=storage)
            check_same_network(cfg, trained)
        except ConfigError as exc:
            _refuse(config, exc)
    data = load_dataset(cfg.data, seed=cfg.seed, full=full)
    shape = data.shape
    try:
        net, loss = build(cfg, shape) if trained is None else (trained_network(trained, shape), None)
    except ConfigError as exc:  # a config its data cannot build: name the file it came from
        _refuse(config, exc)
    out_dir = output_dir(out_dir, key="out")  # after the checks that can fail on bad input
    static = cfg.static_exit
    if trained is None:
        with _progress_bar(progress, cfg.train.epochs, static, held_out=data.val_held_out) as report:
            result = fit(net, loss, data, cfg.train, seed=cfg.seed, augment=cfg.data.augment, device=dev,
                         threads=threads, report=report, deploy_exit=static)  # fmt: skip
    else:
        cfg = cfg.replace(model=net.config)  # a narrow width's network has no fusion head
        result = _as_trained(net, trained, data, cfg, dev)
    # Test accuracy in float32 (no autocast, no TF32) on every device: the deployed files are float32 or int8.
    test = evaluate(net, data.x_test, data.y_test, mean=data.mean, std=data.std, device=dev, amp=False)

    net.to("cpu", memory_format=torch.contiguous_format).eval()
    costs = DeployMetrics(shape)(cfg)  # every analytic deploy metric per exit, at deploy.dtype
    save_checkpoint(
        out_dir / "checkpoint.pt",
        state_dict=net.state_dict(),
        config=cfg.to_dict(),
        loss_state_dict={} if loss is None else {k: v.detach().cpu() for k, v in loss.state_dict().items()},
        **_input_spec(data),
    )
    _write_config(cfg, out_dir)
    calibration = calibration_images(data.x_train, N_CALIBRATION, seed=cfg.seed)
    files = _deploy(net, cfg, data, out_dir, calibration)
    tflm = _tflm(net, cfg, data, out_dir, calibration, files)
    metrics = _metrics(cfg, data, result, test, costs, dev, files, seconds=time.perf_counter() - started,
                       threads=threads or torch.get_num_threads())  # fmt: skip
    metrics.update(tflm)
    if trained is not None:
        metrics["from_study"] = {
            "study": trained.study, "trial": trained.trial, "width": trained.width,
            "checkpoint": str(trained.checkpoint), "val_accuracy": result.val_accuracy.get(static),
            "stored_val_accuracy": trained.val_accuracy,
        }  # fmt: skip
    if cfg.deploy_exit == ANYTIME:
        metrics.update(_anytime(net, cfg, data, out_dir, costs[ANYTIME]))
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return TrainResult(out=out_dir, metrics=metrics, fit=result)


def _as_trained(
    net: torch.nn.Module, trained: TrainedTrial, data: Dataset, cfg: TrialConfig, device: torch.device
) -> FitResult:
    """A study trial's network as if just trained: every exit's validation accuracy, measured as the
    trial measured it (its split, memory format, and bf16 autocast on CUDA when ``train.amp``), so it
    reproduces the stored float32 figure."""
    started = time.perf_counter()
    if cfg.train.channels_last:
        net.to(memory_format=torch.channels_last)
    val = evaluate(net, data.x_val, data.y_val, mean=data.mean, std=data.std, device=device,
                   amp=cfg.train.amp, channels_last=cfg.train.channels_last)  # fmt: skip
    return FitResult(epochs_done=trained.epochs_done, val_accuracy=val, train_loss=(),
                     seconds=time.perf_counter() - started, stopped=False)  # fmt: skip


def _refuse(config: TrialConfig | str | os.PathLike[str], exc: ConfigError) -> NoReturn:
    """Raise ``exc``, as a SpaceError naming the file when the config came from one."""
    if isinstance(config, TrialConfig):
        raise exc
    raise SpaceError(os.fspath(config), exc.key or "", exc.message) from None


def _resolve_config(
    config: TrialConfig | str | os.PathLike[str], epochs: int | None
) -> tuple[TrialConfig, Mapping[str, Any]]:
    """The config to train and the provenance block of its file (empty for a TrialConfig)."""
    provenance: Mapping[str, Any] = {}
    if not isinstance(config, TrialConfig):
        from sdsearch.space.load import load_space

        space = load_space(config)
        config, provenance = space.fixed_config(), space.provenance or {}
        _refuse_older_loss(space.source, config, provenance)
    if epochs is not None:
        config = config.replace(train=config.train.replace(epochs=epochs))
    return config, provenance


def _refuse_older_loss(source: str, config: TrialConfig, provenance: Mapping[str, Any]) -> None:
    """A config exported from a study trained under an older loss would not train to its stored
    values: refused, naming what changed (a hand-written config, without provenance, is not)."""
    from sdsearch.core.metrics import LOSS_CHANGES, current_convention, stored_conventions

    if not provenance:
        return
    dtype = config.deploy.dtype
    stored = stored_conventions(provenance.get("conventions"), dtype).get("loss")
    current = current_convention("loss", dtype)
    if stored != current:
        raise SpaceError(
            source,
            "provenance",
            f"exported from study {provenance.get('study')} trained under the {stored} loss, and the loss has "
            f"changed since ({LOSS_CHANGES}); export it again from a study run with --fresh, or delete the "
            "provenance block to train this config under today's loss",
        )


def _anytime(
    net: torch.nn.Module, cfg: TrialConfig, data: Dataset, out_dir: Path, worst: Mapping[str, float]
) -> dict[str, Any]:
    """Calibrate the anytime thresholds on the validation split, score them on the test split, write
    ``model.anytime.onnx`` and check that ONNX Runtime takes PyTorch's exit decision on every test image.

    Returns the metrics.json entries of an anytime deployment: the top-level test accuracy and
    expected MACs are the anytime model's; ``anytime`` holds the thresholds, shares and the check.
    """
    import numpy as np

    from sdsearch.anytime.model import AnytimeModel, calibrate_network, exit_statistics
    from sdsearch.anytime.onnx import run_anytime_onnx, save_anytime_onnx
    from sdsearch.anytime.policy import anytime_outcome, anytime_report, exit_indices

    norm = {"mean": data.mean, "std": data.std}
    input_shape = (data.shape.in_chans, *data.shape.input_size)
    cal, cost = calibrate_network(net, data, cfg.deploy.target)
    test_stats = exit_statistics(net, data.x_test, data.y_test, **norm)
    test = anytime_outcome(test_stats, cal.thresholds, cost)
    report = anytime_report(cal, cost, test=test)
    model = AnytimeModel(net, cal.thresholds).eval()
    path = out_dir / "model.anytime.onnx"
    status = save_anytime_onnx(model, path, input_shape=input_shape, cost=cost, **norm)
    report["onnx"] = {"file": path.name, "status": status}
    if status == "written":
        _, onnx_exits = run_anytime_onnx(path, data.x_test.transpose(0, 2, 3, 1))
        # PyTorch's decisions come from the batched statistics above (AnytimeModel applies the same
        # rule, which its tests pin), not from a second pass of the whole test split in one batch.
        agreement = float(
            np.mean(onnx_exits == exit_indices(test_stats.confidence, model.thresholds.numpy()))
        )
        report["onnx"].update(bytes=path.stat().st_size, exit_agreement=agreement)
        if agreement < 1.0:
            warnings.warn(
                f"{path}: ONNX Runtime leaves at another exit than PyTorch on {1 - agreement:.2%} of the test "
                "images (confidences within rounding of a threshold); metrics.json reports the PyTorch ones",
                stacklevel=2,
            )
    report["held_out"] = data.val_held_out  # False after --full: thresholds calibrated on training images
    return {
        "test_accuracy": test.accuracy,
        "expected_macs": test.expected_macs,
        **worst,
        "anytime": report,
    }


def _deploy(
    net: torch.nn.Module, cfg: TrialConfig, data: Dataset, out_dir: Path, calibration: np.ndarray
) -> dict[str, Any]:
    """Write the deployed exit's files; their sizes, ONNX Runtime test accuracy and latency for metrics.json."""
    from sdsearch.cost.latency import onnx_latency
    from sdsearch.graphs.runtime import cpu_deploy, onnx_accuracy, onnx_session

    shape = data.shape
    static = cfg.static_exit
    paths = save_deploy_models(
        cpu_deploy(net, static), out_dir, mean=data.mean, std=data.std,
        input_shape=(shape.in_chans, shape.height, shape.width), classes=data.classes, exit=static,
        calibration=calibration,
    )  # fmt: skip
    files: dict[str, Any] = {}
    for precision, path in paths.items():
        entry: dict[str, Any] = {"precision": "float32" if precision == "pt2" else precision,
                                 "bytes": path.stat().st_size}  # fmt: skip
        if path.suffix == ".onnx":
            entry["test_accuracy"] = onnx_accuracy(onnx_session(path), data.x_test, data.y_test)
            timing = cfg.deploy.latency
            entry["latency_ms"] = round(
                onnx_latency(path, threads=timing.threads, repeats=timing.repeats, warmup=timing.warmup), 4
            )
        if precision == "int8":
            entry["calibration_images"] = len(calibration)
        files[path.name] = entry
    return files


def _tflm(
    net: torch.nn.Module,
    cfg: TrialConfig,
    data: Dataset,
    out_dir: Path,
    calibration: np.ndarray,
    files: dict[str, Any],
) -> dict[str, Any]:
    """Write the int8 .tflite and its C++ sources, and run the test split through it in TFLite Micro.

    Returns metrics.json's ``tflm`` entry, null with ``tflm_skipped`` saying why when there is no
    .tflite (an anytime deployment, no ``mcu`` extra, a failed conversion). Adds the files to ``files``.
    """
    path = out_dir / DEPLOY_FILES["tflite"]
    if cfg.deploy_exit == ANYTIME:
        return _no_tflm(
            f"{path.name}: anytime models have no TFLite form yet (model.anytime.onnx is the deployed file)"
        )
    if not mcu_available():
        warnings.warn(
            f"{path}: not written; for the .tflite and its TFLite Micro check: {MCU_INSTALL}", stacklevel=3
        )
        return _no_tflm(f"{path.name}: not written; it needs the mcu extra: {MCU_INSTALL}")
    from sdsearch.graphs.runtime import cpu_deploy, onnx_predictions, onnx_session
    from sdsearch.graphs.tflm import CONVENTION, tflite_io, tflm_logits, tflm_measure

    shape, static = data.shape, cfg.static_exit
    started = time.perf_counter()
    try:
        model = save_tflite(cpu_deploy(net, static), out_dir, mean=data.mean, std=data.std, calibration=calibration,
                            input_shape=(shape.in_chans, shape.height, shape.width))  # fmt: skip
        converted = time.perf_counter()
        report = tflm_measure(model)
        logits = tflm_logits(model, data.x_test, arena=report.arena_bytes)  # the measured arena suffices
        checked = time.perf_counter()
        onnx_int8 = onnx_predictions(onnx_session(out_dir / DEPLOY_FILES["int8"]), data.x_test)
        arena, arena_source = _firmware_arena(cfg, shape, report.arena_bytes)
        written = save_firmware(model, out_dir, arena_bytes=arena, arena_source=arena_source,
                                classes=data.classes, exit=static)  # fmt: skip
        inp, out = tflite_io(model)
    except SdsearchError:
        raise  # a full disk: stop, as for every other file
    except Exception as exc:  # a converter or runtime bug must not lose a finished training run
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(
            f"{path}: conversion or TFLite Micro check failed: {reason}", RuntimeWarning, stacklevel=3
        )
        return _no_tflm(f"{path.name}: conversion or TFLite Micro check failed: {reason}")
    predicted = logits.argmax(1)
    files[path.name] = {
        "precision": "int8", "bytes": len(model), "calibration_images": len(calibration),
        "input": {"layout": TFLITE_INPUT_LAYOUT, "shape": list(inp.shape), "dtype": inp.dtype,
                  "scale": inp.scale, "zero_point": inp.zero_point},
        "output": {"shape": list(out.shape), "dtype": out.dtype, "scale": out.scale, "zero_point": out.zero_point},
    }  # fmt: skip
    header, source = FIRMWARE_FILES
    files[header] = {"bytes": written[header].stat().st_size, "tensor_arena_bytes": arena,
                     "tensor_arena_source": arena_source}  # fmt: skip
    files[source] = {"bytes": written[source].stat().st_size}
    return {
        "tflm": {
            "file": path.name,
            "platform": MEASURED_PLATFORM,
            "runtime": f"tflite-micro {_version('tflite-micro')}",
            "test_images": len(data.y_test),
            "test_accuracy": float(np.mean(predicted == data.y_test)),
            "agreement_with_int8_onnx": float(np.mean(predicted == onnx_int8)),
            **report.as_dict(),
            "convert_seconds": round(converted - started, 3),
            "seconds": round(checked - converted, 3),
            "units": _TFLM_UNITS,
            "convention": CONVENTION,
        }
    }


#: Units of metrics.json's ``tflm`` entry (its ``*seconds`` keys say theirs).
_TFLM_UNITS = {"test_accuracy": "fraction", "agreement_with_int8_onnx": "fraction",
               **dict.fromkeys(FIGURES, "bytes"), "ops": "count"}  # fmt: skip


def _no_tflm(reason: str) -> dict[str, Any]:
    return {"tflm": None, "tflm_skipped": reason}


def _firmware_arena(cfg: TrialConfig, shape: DataShape, measured: int) -> tuple[int, str]:
    """``kTensorArenaSize`` for ``deploy.platform``, and where the figure comes from (for the header).

    The package runs TFLite Micro's reference kernels on a 64-bit host, so the measured arena is the
    answer only for ``tflm-reference``; any other platform gets the estimate of :mod:`sdsearch.cost.tflm`
    (its pointer sizes and kernel scratch buffers), the figure its budget was checked against.
    """
    from sdsearch.cost.trace import exit_costs

    platform = cfg.deploy.platform
    if platform == MEASURED_PLATFORM:
        return measured, f"the smallest arena TFLite Micro ran this model in on {platform} (measured)"
    costs = exit_costs(cfg.model, num_classes=shape.num_classes, in_chans=shape.in_chans,
                       input_size=(shape.height, shape.width), platform=platform)  # fmt: skip
    estimate = costs[cfg.static_exit].peak_memory
    return estimate, (
        f"sdsearch's estimate for {platform} ({PLATFORMS[platform].description}); on {MEASURED_PLATFORM} "
        f"this model ran in {measured} bytes"
    )


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


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
    val = result.val_accuracy if data.val_held_out else {}  # trained on: not an estimate of anything
    exits = {
        name: {"val_accuracy": val.get(name), "test_accuracy": test.get(name), **costs[name]} for name in test
    }
    deployed = exits[cfg.static_exit]
    return {
        "deploy_exit": cfg.deploy_exit,
        **deployed,
        "trained_on": TRAINED_ON[data.val_held_out],
        "train_images": len(data.y_train),
        "dtype": cfg.deploy.dtype,
        "units": {m: METRICS.get(m).unit for m in costs[cfg.static_exit]},
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
        "latency": _latency_settings(cfg),
    }


def _latency_settings(cfg: TrialConfig) -> dict[str, Any]:
    """How ``files[*].latency_ms`` was measured (``deploy.latency``, as the search's latency metric)."""
    import onnxruntime

    timing = cfg.deploy.latency
    return {"runtime": f"onnxruntime {onnxruntime.__version__} CPU", "threads": timing.threads, "batch": 1,
            "warmup": timing.warmup, "repeats": timing.repeats, "statistic": "median"}  # fmt: skip


def _write_config(cfg: TrialConfig, out_dir: Path) -> None:
    """Write the config as a trainer config that ``load_trial_config`` reads back unchanged."""
    from sdsearch.space.document import config_to_document

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", out_dir.resolve().name) or "model"  # a valid study name
    document = config_to_document(cfg, name=name)
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    write_atomic(out_dir / "config.yaml", text)


@contextmanager
def _progress_bar(
    enabled: bool, epochs: int, deploy_exit: str, *, held_out: bool = True
) -> Iterator[Callable[[EpochReport], None] | None]:
    """A report callback that advances a rich progress bar, or None when ``enabled`` is False.

    Without a held-out validation split (``full``) the accuracy shown is on training images, and says so.
    """
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
            what = "val acc" if held_out else "acc on seen val images"
            status = f"loss {rep.train_loss:.4f}  {what} ({deploy_exit}) {rep.accuracy:.4f}"
            bar.update(task, completed=rep.epoch, status=status)

        yield report

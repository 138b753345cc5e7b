"""The Ray Tune trainable: build one config, train it, report every epoch. It never imports Optuna.

Every exception is caught and reported as ``fail_reason`` so the searcher can store *why* a trial
failed (Ray only tells a searcher *that* it failed). The dataset arrives once per worker through
Ray's object store (``tune.with_parameters``), as numpy arrays shared zero-copy.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdsearch.core.config import TrialConfig
from sdsearch.core.exits import ANYTIME, FINAL, candidate_name
from sdsearch.search import result_keys as keys

if TYPE_CHECKING:
    from sdsearch.data.datasets import Dataset
    from sdsearch.training.fit import EpochReport

__all__ = ["fit_config", "train_trial", "worker_info"]


def worker_info(started: float) -> dict[str, Any]:
    """Where and how a trial ran: Ray node id (hostname outside Ray), pid, torch threads, start and end."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else socket.gethostname()
    except Exception:
        node = socket.gethostname()
    import torch

    return {
        "node": node,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "started": started,
        "finished": time.time(),
    }


def _fail_reason(exc: BaseException) -> str:
    import torch

    from sdsearch.core.errors import SdsearchError

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if isinstance(exc, SdsearchError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:500]


def train_trial(config: dict[str, Any], dataset: Dataset | None = None, fit_fn: Any = None) -> None:
    """Ray function trainable: ``config`` is ``{"config": TrialConfig.to_dict(), "threads": n, ...}``.

    ``fit_fn(cfg, dataset, threads=, report=[, checkpoint=])`` defaults to :func:`fit_config` (the
    ``checkpoint`` file, where the trained weights go, is passed only when the study keeps them); tests and benchmarks
    pass a cheap stand-in (``sdsearch.search.testing.FakeFit``) and keep the real failure handling.
    """
    from ray import tune

    started = time.time()
    cfg = TrialConfig.from_dict(config["config"])
    deployed = config.get(keys.DEPLOYED, cfg.deploy_exit)
    last: dict[str, Any] = {keys.EPOCH: 0}

    def report(epoch: EpochReport) -> None:
        if epoch.precision != "float32":  # keep the float32 accuracies next to the deployed precision's
            last.update(
                {keys.FLOAT32_PREFIX + k: v for k, v in list(last.items()) if k.startswith(keys.ACCURACY)}
            )
        # An anytime deployment has its accuracy only at the end; until then the final exit's stands in.
        shown = deployed if deployed in epoch.val_accuracy else FINAL
        last.update(keys.exit_metrics(epoch.val_accuracy, shown))
        last.update(epoch.extra)
        last.update(
            {
                keys.EPOCH: epoch.epoch,
                "train_loss": float(epoch.train_loss),
                "seconds": float(epoch.seconds),
                keys.WORKER: worker_info(started),
            }
        )
        tune.report(dict(last))

    try:
        fit = fit_fn or fit_config
        kept = {"checkpoint": config[keys.CHECKPOINT]} if config.get(keys.CHECKPOINT) and _keeps(fit) else {}
        fit(cfg, dataset, threads=config.get("threads"), report=report, **kept)
    except Exception as exc:
        tune.report({**last, keys.FAIL_REASON: _fail_reason(exc), keys.WORKER: worker_info(started)})


def _keeps(fit: Any) -> bool:
    """Whether a ``fit_fn`` takes ``checkpoint=`` (one written before weights were kept does not: it
    still trains, and its trials keep no weights)."""
    import inspect

    try:
        params = inspect.signature(fit).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "checkpoint" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def fit_config(
    cfg: TrialConfig,
    dataset: Dataset | None,
    *,
    threads: int | None,
    report: Any,
    checkpoint: str | None = None,
) -> Any:
    """Build the network and loss of ``cfg`` and train them (the same path as ``sdsearch train``).

    A run that trains every epoch leaves its weights in ``checkpoint`` (when given), so a candidate
    deploys without retraining (``sdsearch train --from-study``); a failed write costs only that.

    After training, a last report can follow, on the same epoch:

    - with ``deploy.quantize: int8``, every exit's validation accuracy as its statically quantized
      int8 ONNX graph scores it (calibrated on training images), or with ``deploy.runtime: tflm`` its
      int8 .tflite in TensorFlow Lite Micro, so the study's accuracy is the accuracy of what will
      actually run;
    - for a network with shallow exits, the anytime report (thresholds calibrated on the validation
      split for ``deploy.target``, or the default target) that ``show --anytime`` draws; with
      ``deploy.exit: anytime`` its accuracy and expected MACs are the trial's.
    """
    import dataclasses

    import torch

    from sdsearch.data.datasets import load_dataset
    from sdsearch.training.fit import build, fit

    data = dataset if dataset is not None else load_dataset(cfg.data, seed=cfg.seed)
    net, loss = build(cfg, data.shape)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # An elastic network's exits are its (width, exit) candidates; its widest stands for it in fit().
    deploy_exit = candidate_name(cfg.static_exit, net.multipliers[0]) if cfg.elastic else cfg.static_exit
    result = fit(
        net,
        loss,
        data,
        cfg.train,
        seed=cfg.seed,
        augment=cfg.data.augment,
        device=device,
        threads=threads,
        report=report,
        deploy_exit=deploy_exit,
    )
    if result.stopped or report is None:
        return result
    if checkpoint:
        _keep_weights(Path(checkpoint), net, cfg)
    last = result.history[-1]
    if cfg.deploy.quantize == "int8":
        from sdsearch.graphs.runtime import int8_accuracy, tflm_accuracy

        score = tflm_accuracy if cfg.deploy.runtime == "tflm" else int8_accuracy
        if cfg.elastic:  # each width's network scored as it deploys
            subnets = {m: net.subnet(m).eval() for m in net.multipliers}
            int8 = {candidate_name(e, m): acc for m, sub in subnets.items()
                    for e, acc in score(sub, sub.exits, data, seed=cfg.seed).items()}  # fmt: skip
        else:
            int8 = score(net, net.exits, data, seed=cfg.seed)
        last = dataclasses.replace(last, val_accuracy=int8, accuracy=int8[deploy_exit], precision="int8")
        report(last)
    if len(net.exits) > 1 and not cfg.elastic:  # an elastic trial deploys one exit per candidate
        report(anytime_report(cfg, net, data, last))
    return result


def _keep_weights(path: Path, net: Any, cfg: TrialConfig) -> None:
    import warnings

    from sdsearch.core.errors import SdsearchError
    from sdsearch.training.checkpoint import save_checkpoint

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, state_dict=net.state_dict(), config=cfg.to_dict())
    except (OSError, SdsearchError) as exc:  # the trial's results stand; only its weights are not kept
        warnings.warn(f"{path}: the trained weights were not kept: {exc}", RuntimeWarning, stacklevel=2)


def anytime_report(cfg: TrialConfig, net: Any, data: Dataset, last: EpochReport) -> EpochReport:
    """``last`` with the network's anytime report; for an anytime deployment, its metrics too."""
    import dataclasses
    import json

    from sdsearch.anytime.model import calibrate_network
    from sdsearch.anytime.policy import anytime_report as report_of

    cal, cost = calibrate_network(net, data, cfg.deploy.target)
    # JSON text: Ray flattens nested dicts in results, and the report is nested several levels deep.
    extra: dict[str, Any] = {keys.ANYTIME: json.dumps(report_of(cal, cost))}
    if cfg.deploy_exit != ANYTIME:
        return dataclasses.replace(last, extra=extra)
    accuracy = cal.outcome.accuracy
    extra.update(anytime_accuracy=accuracy, expected_macs=cal.outcome.expected_macs)
    return dataclasses.replace(
        last, val_accuracy={**last.val_accuracy, ANYTIME: accuracy}, accuracy=accuracy, extra=extra
    )

"""The ``sdsearch`` command: parse arguments, call one API function, print, return an exit code.

Exit codes: 0 success, 2 bad input (:class:`~sdsearch.core.errors.SdsearchError` with ``exit_code`` 2),
1 anything else, each with a one-line reason on stderr; ``--debug`` shows the traceback instead.
Heavy modules are imported inside the handlers so ``--help`` and ``validate`` start instantly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from sdsearch import __version__
from sdsearch.core.errors import ConfigError, SdsearchError
from sdsearch.core.platforms import MCU_INSTALL, PLATFORMS, mcu_available
from sdsearch.core.units import DTYPES

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped or captured: keep tables whole instead of rich's 80 columns
    return console


# -- validate ------------------------------------------------------------------------------------


def _add_validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a space or trainer config and summarise it")
    p.add_argument("file", help="space YAML file")
    p.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from sdsearch.results.summary import space_summary
    from sdsearch.space.load import load_space

    _console().print(space_summary(load_space(args.file)))
    return 0


# -- schema --------------------------------------------------------------------------------------


def _add_schema(sub: Any) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of space files (for editor completion)")
    p.set_defaults(handler=_schema)


def _schema(args: argparse.Namespace) -> int:
    from sdsearch.space.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


# -- cost ----------------------------------------------------------------------------------------


def _add_cost(sub: Any) -> None:
    p = sub.add_parser(
        "cost", help="params, MACs, peak memory and size of every exit's deploy model for a fixed config"
    )
    p.add_argument("config", help="trainer config YAML (every value fixed)")
    p.add_argument("--input", help="input shape CxHxW, e.g. 3x32x32 (default: from the data section)")
    p.add_argument("--classes", type=int, help="number of classes (default: from the data section)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="deployment element type of peak memory, size and latency (default: the config's deploy.dtype)",
    )
    p.add_argument(
        "--platform",
        choices=tuple(PLATFORMS),
        help="the microcontroller of the int8 peak memory and size (default: the config's deploy.platform)",
    )
    p.add_argument(
        "--tflm",
        action="store_true",
        help="also convert each exit (random weights) and measure it in TFLite Micro against the estimate",
    )
    p.add_argument("--no-latency", action="store_true", help="skip the ONNX Runtime latency measurement")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cost)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--input: {text!r} is not CxHxW (e.g. 3x32x32)") from None
    if min(c, h, w) < 1 or min(h, w) < 8:
        raise ConfigError(f"--input: {text!r} needs C >= 1 and H, W >= 8")
    return c, h, w


def _cost(args: argparse.Namespace) -> int:
    from sdsearch.core.metrics import METRICS, metric_value
    from sdsearch.cost.metrics import config_metrics
    from sdsearch.results.summary import cost_table
    from sdsearch.space.load import load_trial_config

    shape = _parse_shape(args.input) if args.input else None
    if args.classes is not None and args.classes < 2:
        raise ConfigError(f"--classes: must be >= 2, got {args.classes}")
    config = load_trial_config(args.config)
    dtype = args.dtype or config.deploy.dtype
    platform = args.platform or config.deploy.platform
    if args.tflm and not mcu_available():
        raise ConfigError(f"--tflm: converting and running TFLite Micro needs the mcu extra: {MCU_INSTALL}")
    metrics = config_metrics(
        args.config, input_shape=shape, num_classes=args.classes, dtype=dtype, platform=platform,
        latency=not args.no_latency,
    )  # fmt: skip
    names = [m for m in METRICS.names() if METRICS.get(m).before_training]
    rows = [
        {"exit": e, **{m: metric_value(v, m) for m in names if metric_value(v, m) is not None}}
        for e, v in metrics.items()
    ]
    checks = _tflm_checks(config, args.config, shape, args.classes) if args.tflm else None
    if args.json:
        units = {m: METRICS.get(m).unit for m in names if any(m in r for r in rows)}
        out: dict[str, Any] = {"dtype": dtype, "platform": platform, "units": units, "exits": rows}
        if checks is not None:
            out["tflm"] = checks
        print(json.dumps(out))
        return 0
    _console().print(cost_table(rows, dtype=dtype, platform=platform))
    if checks is not None:
        from sdsearch.results.summary import tflm_check_table

        _console().print(tflm_check_table(checks))
    return 0


def _tflm_checks(
    config: Any, path: str, shape: tuple[int, int, int] | None, classes: int | None
) -> dict[str, dict[str, dict[str, int]]]:
    """``{exit: {"estimate": {...}, "measured": {...}}}`` in bytes, on the platform TFLite Micro's package runs."""
    from sdsearch.cost.tflm_check import COMPARED, check_exits
    from sdsearch.data.datasets import DataShape, describe

    if shape is None or classes is None:
        described = describe(config.data)
        shape = shape or (described.in_chans, described.height, described.width)
        classes = classes or described.num_classes
    exits = list(config.model.exits)
    with _console().status(f"{path}: converting {len(exits)} exits to .tflite and running TFLite Micro"):
        checks = check_exits(config.model, DataShape(*shape, classes), exits=exits, seed=config.seed)
    return {
        e: {
            side: {f: int(getattr(getattr(c, side), f)) for f in COMPARED}
            for side in ("estimate", "measured")
        }
        for e, c in checks.items()
    }


# -- run -----------------------------------------------------------------------------------------


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run (or resume) the search a space file describes")
    p.add_argument("space", help="space YAML file")
    p.add_argument("--trials", type=int, help="trained trials to reach (overrides the file's trials)")
    p.add_argument("--storage", help="study storage URL (overrides the file's storage)")
    p.add_argument(
        "--fresh", action="store_true", help="start a new study; the old one is kept under a suffixed name"
    )
    p.add_argument("--address", help="join an existing Ray cluster (auto, or ray://host:port)")
    p.add_argument("--seed", type=int, help="sampler and training seed (overrides the file's seed)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sdsearch.results.summary import run_summary
    from sdsearch.search.runner import run

    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials: must be >= 1, got {args.trials}")
    summary = run(
        args.space,
        n_trials=args.trials,
        storage=args.storage,
        fresh=args.fresh,
        address=args.address,
        seed=args.seed,
    )
    _console().print(run_summary(summary, args.space))
    return 0


# -- show ----------------------------------------------------------------------------------------


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="space YAML file, or a storage (URL or .db file)")
    p.add_argument("--study", dest="study_name", help="study name (needed when a storage holds several)")
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="METRIC=SIZE",
        help="a tighter budget than the study's, e.g. macs=1M or peak_memory=64KiB (repeatable)",
    )


def _budget(items: Sequence[str]) -> dict[str, str] | None:
    from sdsearch.results.budget import parse_budget_items

    return parse_budget_items(items) or None


def _add_show(sub: Any) -> None:
    p = sub.add_parser("show", help="Pareto front of a study: table, plot, CSV or JSON")
    _add_source(p)
    p.add_argument("--candidates", action="store_true", help="front over (trial, exit) candidates")
    p.add_argument("--plot", metavar="FILE.png", help="write accuracy vs MACs / params plots")
    p.add_argument("--csv", metavar="FILE", help="write the front as CSV")
    p.add_argument("--json", action="store_true", help="print the front as JSON")
    p.add_argument(
        "--anytime",
        type=int,
        metavar="TRIAL",
        help="one trained trial's early-exit trade-off: accuracy against expected MACs (with --plot)",
    )
    p.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from sdsearch.results.plot import plot_front
    from sdsearch.results.read import load_front
    from sdsearch.results.report import front_json, front_report, write_csv

    if args.anytime is not None:
        return _show_anytime(args)
    front = load_front(
        args.source, study_name=args.study_name, candidates=args.candidates, budget=_budget(args.budget)
    )
    if args.json:
        print(json.dumps(front_json(front), indent=2))
    else:
        _console().print(front_report(front))
    if args.csv:
        write_csv(front, args.csv)
    if args.plot:
        written = plot_front(front, args.plot)
        if not args.json:
            _console().print(f"plot written to {written}")
    return 0


def _show_anytime(args: argparse.Namespace) -> int:
    from sdsearch.anytime.view import anytime_table
    from sdsearch.results.plot import plot_anytime_of
    from sdsearch.results.read import anytime_of, read_study

    report = anytime_of(read_study(args.source, study_name=args.study_name), args.anytime)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _console().print(anytime_table(report))
    if args.plot:
        written = plot_anytime_of(report, args.plot, title=f"trial {args.anytime}")
        if not args.json:
            _console().print(f"plot written to {written}")
    return 0


# -- export --------------------------------------------------------------------------------------


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write the chosen configuration as a trainer config")
    _add_source(p)
    p.add_argument(
        "--pick", default="knee", help="best, knee (default), trial:N, trial:N:EXIT or trial:N:EXIT@WIDTH"
    )
    p.add_argument("--candidates", action="store_true", help="pick best/knee among (trial, exit) candidates")
    p.add_argument("--epochs", type=int, help="train longer in the final run")
    p.add_argument("-o", "--out", required=True, help="trainer config to write, e.g. best.yaml")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from sdsearch.results.pick import export_config

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {args.epochs}")
    doc = export_config(
        args.source,
        study_name=args.study_name,
        pick=args.pick,
        budget=_budget(args.budget),
        candidates=args.candidates,
        epochs=args.epochs,
        out=args.out,
    )
    prov = doc.get("provenance", {})
    width = "" if prov.get("width") is None else f" at {prov['width']:g} x the trial's width"
    _console().print(
        f"wrote {args.out} (trial {prov.get('trial')}, exit {doc['deploy']['exit']}{width}); "
        f"train it with: sdsearch train {args.out} (add --from-study to deploy the trial's own weights)"
    )
    return 0


# -- train ---------------------------------------------------------------------------------------


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a fixed config into a deployable model")
    p.add_argument("config", help="trainer config YAML (e.g. from sdsearch export)")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--full",
        action="store_true",
        help="train on train + validation for the final model (metrics.json: trained_on train+val, no val accuracy)",
    )
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default: the search trial's, to reproduce it)"
    )
    p.add_argument(
        "--from-study",
        action="store_true",
        help="no training: deploy the weights the exported config's trial left in its study",
    )
    p.add_argument(
        "--storage", help="the study's storage URL for --from-study (when the exported one is masked)"
    )
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdsearch.deploy.build import train

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs: must be >= 1, got {args.epochs}")
    out = args.out or str(Path("runs") / Path(args.config).stem)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
    result = train(args.config, out=out, epochs=args.epochs, full=args.full, threads=args.threads,
                   from_study=args.from_study, storage=args.storage)  # fmt: skip
    _console().print(f"model and metrics written to {result.out}")
    return 0


# -- predict -------------------------------------------------------------------------------------


def _add_predict(sub: Any) -> None:
    p = sub.add_parser("predict", help="classify images with the model sdsearch train wrote")
    p.add_argument("run_dir", help="the folder sdsearch train --out wrote (holds model.onnx)")
    p.add_argument("images", nargs="+", help="image files, or folders of images")
    p.add_argument("--int8", action="store_true", help="use model.int8.onnx instead of model.onnx")
    p.add_argument("--top", type=int, default=1, help="classes to show per image (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_predict)


def _predict(args: argparse.Namespace) -> int:
    from sdsearch.deploy.predict import predict, prediction_rows, prediction_table

    if args.top < 1:
        raise ConfigError(f"--top: must be >= 1, got {args.top}")
    predictions = predict(args.run_dir, args.images, int8=args.int8, top=args.top)
    if args.json:
        print(json.dumps(prediction_rows(predictions), indent=2))
    else:
        _console().print(prediction_table(predictions))
    return 0


# -- studies -------------------------------------------------------------------------------------


def _add_studies(sub: Any) -> None:
    p = sub.add_parser("studies", help="list the studies in a storage with their trial counts")
    p.add_argument("storage", help="storage URL or .db file (or a space file: its storage)")
    p.set_defaults(handler=_studies)


def _studies(args: argparse.Namespace) -> int:
    from sdsearch.results.read import list_studies
    from sdsearch.results.summary import studies_table

    _console().print(studies_table(list_studies(args.storage)))
    return 0


# -- main ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An argument parser that remembers the flag setting each destination (``study_name`` ->
    ``--study``), so an error the library raises about an argument can name the flag instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: dict[str, str] = {}  # before super().__init__, which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.flags[action.dest] = max(action.option_strings, key=len)
        return action


def build_parser() -> _Parser:
    parser = _Parser(
        prog="sdsearch",
        description="Search self-distilled lightweight CNNs for edge budgets (Optuna + Ray Tune).",
    )
    parser.add_argument("--version", action="version", version=f"sdsearch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (
        _add_validate,
        _add_schema,
        _add_cost,
        _add_run,
        _add_show,
        _add_export,
        _add_train,
        _add_predict,
        _add_studies,
    ):
        add(sub)
    parser.command_flags = {name: p.flags for name, p in sub.choices.items()}
    return parser


def _message(exc: SdsearchError, flags: dict[str, str]) -> str:
    """The error's one line, with the flag that sets the argument it names (``budget: ...`` -> ``--budget: ...``)."""
    text = str(exc)
    flag = flags.get(exc.key or "") if isinstance(exc.key, str) else None
    if flag and text.startswith(f"{exc.key}: "):
        return f"{flag}: {text[len(exc.key) + 2 :]}"
    return text


def _one_line_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Warnings for people: one line, no source location (``--debug`` keeps Python's format)."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdsearch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # restores the caller's warning display afterwards
            if not args.debug:
                warnings.showwarning = _one_line_warning
            return args.handler(args)
    except SdsearchError as exc:
        if args.debug:
            raise
        print(_message(exc, parser.command_flags.get(args.command, {})), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `sdsearch show --json | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            "interrupted; finished trials are kept in the study (run the same command to resume)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

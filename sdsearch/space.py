"""YAML space files: load, validate strictly, sample configs from them, hash what defines a study.

A space file (DESIGN.md §3) declares the study settings (name, storage, trials, sampler, objectives,
budget, resources, scheduler, data, train) and a ``space:`` tree whose every leaf is a literal or one
distribution. A *trainer config* is the same schema with no distributions left, so one loader and one
validator serve ``run``, ``train``, ``cost`` and ``export``.

Validation errors are :class:`~sdsearch.errors.SpaceError`: ``FILE: key.path: what is wrong (allowed)``.
This module imports neither torch nor ray nor optuna, so ``sdsearch validate`` starts instantly; the
``trial`` passed to :meth:`Space.suggest` is duck-typed (any object with Optuna's ``suggest_*``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from sdsearch import config as C
from sdsearch.config import TrialConfig
from sdsearch.errors import SpaceError
from sdsearch.sizes import parse_size

__all__ = [
    "SAMPLERS",
    "Dimension",
    "Resources",
    "SamplerSpec",
    "SchedulerSpec",
    "Space",
    "config_to_document",
    "diff_documents",
    "load_space",
    "load_trial_config",
    "parse_space",
]

OBJECTIVES = ("accuracy", "params", "macs", "flops")
DEFAULT_OBJECTIVES = ("accuracy", "params", "macs")
#: Sampler name -> options accepted in the YAML (passed to the Optuna sampler as keyword arguments).
SAMPLERS: dict[str, tuple[str, ...]] = {
    "tpe": (
        "n_startup_trials",
        "n_ei_candidates",
        "multivariate",
        "group",
        "constant_liar",
        "consider_endpoints",
    ),
    "nsga2": ("population_size", "mutation_prob", "crossover_prob", "swapping_prob"),
    "nsga3": ("population_size", "mutation_prob", "crossover_prob", "swapping_prob", "dividing_parameter"),
    "gp": ("n_startup_trials", "deterministic_objective"),
    "random": (),
    "qmc": ("qmc_type", "scramble"),
}
SCHEDULERS = ("none", "asha")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_DISTRIBUTIONS = ("choice", "int", "float", "subset")


class SuggestTrial(Protocol):
    """What :meth:`Space.suggest` needs from an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


# --------------------------------------------------------------------------------------------------
# Leaf schema: what each searchable key accepts.


@dataclass(frozen=True)
class _Leaf:
    kind: str  # "enum" | "int" | "float" | "bool" | "ints" | "floats"
    allowed: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself not allowed

    def check(self, value: Any) -> Any:
        """Return the value coerced to the key's type, or raise ValueError(what is allowed)."""
        if self.kind == "enum":
            if isinstance(value, bool) or value not in self.allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.allowed))}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {value!r}")
            return value
        if self.kind in ("ints", "floats"):
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            item = _Leaf(
                "int" if self.kind == "ints" else "float", self.allowed, self.low, self.high, self.low_open
            )
            checked = [item.check(v) for v in value]
            if self.allowed and len(set(checked)) != len(checked):
                raise ValueError(f"items must be unique, got {value!r}")
            return sorted(checked) if self.allowed else checked
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"expected an integer, got {value!r}")
            if self.allowed and value not in self.allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.allowed))}")
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value!r}")
        self._check_range(value)
        return value

    def _check_range(self, value: float) -> None:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            sign = ">" if self.low_open else ">="
            raise ValueError(f"must be {sign} {self.low:g}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"must be <= {self.high:g}, got {value!r}")


_POS = {"low": 0.0, "low_open": True}
_NONNEG = {"low": 0.0}
#: section -> key -> leaf schema. ``space.train`` accepts every key of the top-level ``train``.
_TRAIN_LEAVES: dict[str, _Leaf] = {
    "epochs": _Leaf("int", low=1),
    "batch_size": _Leaf("int", low=1),
    "optimizer": _Leaf("enum", C.OPTIMIZERS),
    "lr": _Leaf("float", **_POS),
    "momentum": _Leaf("float", low=0.0, high=1.0),
    "nesterov": _Leaf("bool"),
    "weight_decay": _Leaf("float", **_NONNEG),
    "schedule": _Leaf("enum", C.SCHEDULES),
    "warmup_epochs": _Leaf("int", low=0),
    "milestones": _Leaf("floats", low=0.0, high=1.0),
    "gamma": _Leaf("float", **_POS),
    "amp": _Leaf("bool"),
    "channels_last": _Leaf("bool"),
}
_SPACE_LEAVES: dict[str, dict[str, _Leaf]] = {
    "backbone": {
        "arch": _Leaf("enum", C.ARCHS),
        "width": _Leaf("float", low=0.0, low_open=True, high=4.0),
        "depth": _Leaf("int", low=1, high=8),
    },
    "branches": {
        "placement": _Leaf("ints", allowed=(1, 2, 3)),
        "style": _Leaf("enum", C.BRANCH_STYLES),
    },
    "cbfe": {
        "location": _Leaf("enum", C.CBFE_LOCATIONS),
        "ratio": _Leaf("int", low=1),
    },
    "fusion": {"type": _Leaf("enum", C.FUSION_TYPES)},
    "loss": {
        "teacher": _Leaf("enum", C.TEACHERS),
        "kd_weight": _Leaf("float", **_NONNEG),
        "temperature": _Leaf("float", **_POS),
        "feature_weight": _Leaf("float", **_NONNEG),
        "ce_weight": _Leaf("float", **_POS),
        "style": _Leaf("enum", C.LOSS_STYLES),
    },
    "train": _TRAIN_LEAVES,
}
_DATA_LEAVES: dict[str, _Leaf] = {
    "dataset": _Leaf("enum", C.DATASETS),
    "val_fraction": _Leaf("float", low=0.0, low_open=True, high=0.9),
    "download": _Leaf("bool"),
    "augment": _Leaf("enum", C.AUGMENTS),
}
_TOP_KEYS = (
    "name",
    "description",
    "storage",
    "trials",
    "seed",
    "sampler",
    "objectives",
    "budget",
    "resources",
    "scheduler",
    "data",
    "train",
    "space",
    "deploy",
    "provenance",
)


# --------------------------------------------------------------------------------------------------
# Dimensions: one searchable leaf, fixed or a distribution.


@dataclass(frozen=True)
class Dimension:
    """One leaf of ``space:``: a fixed ``value`` or a distribution (``kind`` != "fixed").

    ``kind`` is ``fixed``, ``choice``, ``int``, ``float`` or ``subset``; ``choices`` holds the choice
    or subset items; ``low``/``high``/``step``/``log`` the range; ``min`` the subset's minimum size.
    """

    key: str
    kind: str
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    min: int = 0

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"

    def describe(self) -> str:
        """Short human form: ``choice(resnet, mobilenetv2)``, ``float[0.01, 0.2] log``."""
        if self.kind == "fixed":
            return repr(self.value)
        if self.kind in ("choice", "subset"):
            extra = f" min {self.min}" if self.kind == "subset" and self.min else ""
            return f"{self.kind}({', '.join(map(str, self.choices))}){extra}"
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.kind}[{self.low:g}, {self.high:g}]{step}{' log' if self.log else ''}"

    def as_spec(self) -> Any:
        """The canonical YAML form (used for hashing and for naming what changed)."""
        if self.kind == "fixed":
            return self.value
        if self.kind in ("choice", "subset"):
            spec: dict[str, Any] = {self.kind: list(self.choices)}
            if self.kind == "subset":
                spec["min"] = self.min
            return spec
        spec = {self.kind: [self.low, self.high], "log": self.log}
        if self.step is not None:
            spec["step"] = self.step
        return spec

    def suggest(
        self, trial: SuggestTrial, *, name: str | None = None, choices: tuple[Any, ...] | None = None
    ) -> Any:
        """Sample this leaf through Optuna's define-by-run API (keyword arguments only)."""
        name = name or self.key
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            options = choices if choices is not None else self.choices
            return options[0] if len(options) == 1 else trial.suggest_categorical(name, list(options))
        if self.kind == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return [item for item in self.choices if trial.suggest_categorical(f"{name}.{item}", [False, True])]


# --------------------------------------------------------------------------------------------------
# Study settings.


@dataclass(frozen=True)
class SamplerSpec:
    """Optuna sampler name and its keyword options (``seed`` comes from the space's seed)."""

    type: str = "tpe"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerSpec:
    """Trial scheduler: ``none`` or ASHA on validation accuracy."""

    type: str = "none"
    grace_epochs: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class Resources:
    """Per-trial resources; ``concurrent`` caps trials at once (None: as many as fit)."""

    cpu: float = 1.0
    gpu: float = 0.0
    concurrent: int | None = None


@dataclass(frozen=True)
class Space:
    """A validated space file. Build it with :func:`load_space` or :func:`parse_space`.

    Invariant: every leaf in ``dims`` passed its key's schema, so :meth:`suggest` only ever yields
    configs the network builder accepts (conditional keys are resolved at sampling time).
    """

    source: str
    name: str
    storage: str
    n_trials: int
    seed: int
    sampler: SamplerSpec
    objectives: tuple[str, ...]
    budget: Mapping[str, float]
    resources: Resources
    scheduler: SchedulerSpec
    data: C.DataConfig
    train: C.TrainConfig
    dims: Mapping[str, Dimension]
    deploy_exit: str
    document: Mapping[str, Any]
    provenance: Mapping[str, Any] | None = None

    # -- shape of the space ------------------------------------------------------------------------
    @property
    def searched(self) -> list[Dimension]:
        """Dimensions that hold a distribution."""
        return [d for d in self.dims.values() if not d.is_fixed]

    @property
    def is_fixed(self) -> bool:
        """True for a trainer config: nothing left to sample."""
        return not self.searched

    @property
    def conditional(self) -> dict[str, str]:
        """Searched keys sampled only under a condition -> that condition, in words."""
        out: dict[str, str] = {}
        location = self.dims["cbfe.location"]
        if not self.dims["cbfe.ratio"].is_fixed and "none" in _values(location):
            out["cbfe.ratio"] = "only when cbfe.location is not none"
        teacher = self.dims["loss.teacher"]
        if "fused" in _values(teacher) and len(_values(teacher)) > 1 and "none" in self._fusion_values():
            out["loss.teacher"] = "fused only when fusion.type is not none"
        return out

    def _fusion_values(self) -> tuple[Any, ...]:
        values = _values(self.dims["fusion.type"])
        if _values(self.dims["loss.teacher"]) == ("fused",):
            values = tuple(v for v in values if v != "none")
        return values

    # -- sampling ----------------------------------------------------------------------------------
    def suggest(self, trial: SuggestTrial) -> TrialConfig:
        """Sample one fully fixed config, define-by-run: conditional keys only where they apply.

        The config may still break a cross-key rule; :meth:`invalid_reason` says which.
        """
        v: dict[str, Any] = {}
        for key in (
            "backbone.arch",
            "backbone.width",
            "backbone.depth",
            "branches.placement",
            "branches.style",
            "cbfe.location",
        ):
            v[key] = self.dims[key].suggest(trial)
        v["cbfe.ratio"] = (
            self.dims["cbfe.ratio"].suggest(trial) if v["cbfe.location"] != "none" else C.CBFEConfig.ratio
        )
        v["fusion.type"] = self.dims["fusion.type"].suggest(trial, choices=self._fusion_values())
        teacher = self.dims["loss.teacher"]
        if v["fusion.type"] == "none" and "fused" in _values(teacher):
            without_fused = tuple(t for t in _values(teacher) if t != "fused")
            v["loss.teacher"] = teacher.suggest(
                trial, name="loss.teacher_without_fusion", choices=without_fused
            )
        else:
            v["loss.teacher"] = teacher.suggest(trial)
        for key, dim in self.dims.items():
            if key not in v:
                v[key] = dim.suggest(trial)
        return self._config(v)

    @property
    def can_be_invalid(self) -> bool:
        """Whether :meth:`suggest` can yield a config that :meth:`invalid_reason` refuses."""
        return self.dims["branches.placement"].min > 0

    def invalid_reason(self, config: TrialConfig) -> str | None:
        """Why a sampled config breaks a rule no single leaf can express (a subset under its ``min``)."""
        placement = self.dims["branches.placement"]
        if len(config.model.branches.placement) < placement.min:
            return f"branches.placement: {list(config.model.branches.placement)} has fewer than {placement.min} exits"
        return None

    def fixed_config(self) -> TrialConfig:
        """The one config of a trainer config (a space with no distributions)."""
        if not self.is_fixed:
            first = self.searched[0]
            raise SpaceError(
                self.source,
                f"space.{first.key}",
                f"is still a distribution ({first.describe()}); a trainer config needs every value fixed "
                "(write one value, or export one with `sdsearch export`)",
            )
        return self.suggest(_NoTrial())

    def _config(self, v: Mapping[str, Any]) -> TrialConfig:
        sections: dict[str, dict[str, Any]] = {}
        for key, value in v.items():
            section, leaf = key.split(".", 1)
            sections.setdefault(section, {})[leaf] = value
        model = {s: sections[s] for s in ("backbone", "branches", "cbfe", "fusion")}
        train = dataclasses.asdict(self.train) | sections.get("train", {})
        return TrialConfig.from_dict(
            {
                "model": model,
                "loss": sections["loss"],
                "data": dataclasses.asdict(self.data),
                "train": train,
                "deploy_exit": self.deploy_exit,
                "seed": self.seed,
            }
        )

    # -- identity ----------------------------------------------------------------------------------
    def study_spec(self) -> dict[str, Any]:
        """The parts that define the study's results: space, data, train, objectives, budget, deploy.

        The seed is included: it fixes the validation split and the initial weights of every trial.
        Not trials, sampler, resources, scheduler or storage: changing those continues the study.
        """
        return {
            "space": {k: d.as_spec() for k, d in sorted(self.dims.items())},
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "seed": self.seed,
            "objectives": list(self.objectives),
            "budget": dict(sorted(self.budget.items())),
            "deploy": {"exit": self.deploy_exit},
        }

    def spec_hash(self) -> str:
        """Stable hash of :meth:`study_spec` (canonical JSON, sha256, 16 hex digits)."""
        blob = json.dumps(_plain(self.study_spec()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _NoTrial:
    """Stands in for an Optuna trial when a space has nothing to sample."""

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        raise AssertionError(f"fixed space sampled {name}")

    suggest_int = suggest_float = suggest_categorical


def _values(dim: Dimension) -> tuple[Any, ...]:
    return (dim.value,) if dim.is_fixed else dim.choices


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Loading.


def load_space(path: str | os.PathLike[str]) -> Space:
    """Read and validate a space (or trainer config) YAML file.

    Example:
        >>> space = load_space("spaces/iot_budget.yaml")
        >>> space.name, space.n_trials
        ('iot_budget', 24)

    Raises:
        SpaceError: the file is missing, not YAML, or breaks a rule; the message names the key.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(
            source, "", "no such file (check the path; shipped spaces live in spaces/)"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise SpaceError(source, "", f"cannot read the file ({type(exc).__name__})") from None
    return parse_space(_parse_yaml(text, source), source=source, default_name=Path(path).stem)


def load_trial_config(path: str | os.PathLike[str]) -> TrialConfig:
    """Read a trainer config (a space with every value fixed) into a :class:`TrialConfig`."""
    return load_space(path).fixed_config()


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain safe_load silently keeps the last one)."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (each key may appear once)", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark else ""
        kind = "YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpaceError(source, line, f"{kind}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpaceError(source, "", f"YAML syntax error: {exc}") from None


def parse_space(document: Any, *, source: str = "<string>", default_name: str = "study") -> Space:
    """Validate a parsed YAML document (see :func:`load_space`)."""
    return _Validator(source).space(document, default_name)


def _did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class _Validator:
    """Walks a document once, raising the first :class:`SpaceError` with its key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> SpaceError:
        return SpaceError(self.source, key, message)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            what = f"a mapping of {', '.join(allowed)}" if allowed else "a mapping"
            raise self.fail(key, f"expected {what}, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                prefix = f"{key}." if key else ""
                raise self.fail(
                    f"{prefix}{k}",
                    f"unknown key (allowed: {', '.join(allowed)}){_did_you_mean(str(k), allowed)}",
                )
        return dict(value)

    def leaf(self, schema: _Leaf, value: Any, key: str) -> Any:
        try:
            return schema.check(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    # -- top level ---------------------------------------------------------------------------------
    def space(self, document: Any, default_name: str) -> Space:
        if not isinstance(document, Mapping):
            raise self.fail(
                "",
                f"the document must be a mapping with keys such as name, space, train; got {_kind(document)}",
            )
        doc = self.mapping(document, "", _TOP_KEYS)
        name = doc.get("name", re.sub(r"[^A-Za-z0-9_.-]", "_", default_name))
        if not isinstance(name, str) or not _NAME.match(name):
            raise self.fail("name", f"{name!r} is not a valid study name (letters, digits, _ . - only)")
        if "description" in doc and not isinstance(doc["description"], str):
            raise self.fail("description", f"expected text, got {_kind(doc['description'])}")
        storage = self.storage(doc.get("storage"), name)
        n_trials = self.leaf(_Leaf("int", low=1), doc.get("trials", 20), "trials")
        seed = self.leaf(_Leaf("int", low=0), doc.get("seed", 0), "seed")
        objectives = self.objectives(doc.get("objectives", list(DEFAULT_OBJECTIVES)))
        budget = self.budget(doc.get("budget"))
        data = self.data(doc.get("data"))
        train = self.train(doc.get("train"))
        deploy_exit = self.deploy(doc.get("deploy"))
        dims = self.dims(doc.get("space"))
        self.cross_checks(dims, deploy_exit, train)
        provenance = doc.get("provenance")
        if provenance is not None and not isinstance(provenance, Mapping):
            raise self.fail("provenance", f"expected a mapping, got {_kind(provenance)}")
        return Space(
            source=self.source,
            name=name,
            storage=storage,
            n_trials=n_trials,
            seed=seed,
            sampler=self.sampler(doc.get("sampler", "tpe")),
            objectives=objectives,
            budget=budget,
            resources=self.resources(doc.get("resources")),
            scheduler=self.scheduler(doc.get("scheduler")),
            data=data,
            train=train,
            dims=dims,
            deploy_exit=deploy_exit,
            document=_plain(doc),
            provenance=dict(provenance) if provenance is not None else None,
        )

    def storage(self, value: Any, name: str) -> str:
        if value is None:
            return f"sqlite:///studies/{name}.db"
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                "storage", f"expected a database URL such as sqlite:///studies/{name}.db, got {value!r}"
            )
        if "://" not in value:
            if value.endswith((".db", ".sqlite", ".sqlite3")):
                return f"sqlite:///{value}"
            raise self.fail("storage", f"{value!r} is not a database URL (e.g. sqlite:///studies/{name}.db)")
        return value

    def objectives(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(
                "objectives", f"expected a non-empty list of {', '.join(OBJECTIVES)}, got {value!r}"
            )
        for i, item in enumerate(value):
            if item not in OBJECTIVES:
                raise self.fail(
                    f"objectives[{i}]",
                    f"{item!r} is not one of {', '.join(OBJECTIVES)}{_did_you_mean(str(item), OBJECTIVES)}",
                )
        if len(set(value)) != len(value):
            raise self.fail("objectives", f"objectives repeat: {value}")
        if "accuracy" not in value:
            raise self.fail("objectives", "must include accuracy (what would the search maximise?)")
        if "macs" in value and "flops" in value:
            raise self.fail("objectives", "use macs or flops, not both (flops = 2 x macs)")
        return tuple(value)

    def budget(self, value: Any) -> dict[str, float]:
        raw = self.mapping(value, "budget", ("params", "macs", "flops"))
        out = {}
        for metric, limit in raw.items():
            try:
                size = parse_size(limit)
            except ValueError as exc:
                raise self.fail(f"budget.{metric}", str(exc)) from None
            if size <= 0:
                raise self.fail(f"budget.{metric}", f"must be > 0, got {limit!r}")
            out[metric] = size
        return out

    def sampler(self, value: Any) -> SamplerSpec:
        given_as_name = isinstance(value, str)
        if given_as_name:
            value = {"type": value}
        raw = self.mapping(
            value, "sampler", ("type", *sorted({o for opts in SAMPLERS.values() for o in opts}))
        )
        kind = raw.pop("type", "tpe")
        if kind not in SAMPLERS:
            names = tuple(SAMPLERS)
            raise self.fail(
                "sampler" if given_as_name else "sampler.type",
                f"{kind!r} is not one of {', '.join(names)}{_did_you_mean(str(kind), names)}",
            )
        for option in raw:
            if option not in SAMPLERS[kind]:
                allowed = ", ".join(SAMPLERS[kind]) or "no options"
                raise self.fail(
                    f"sampler.{option}", f"not an option of the {kind} sampler (allowed: {allowed})"
                )
        if "population_size" in raw:
            self.leaf(_Leaf("int", low=2), raw["population_size"], "sampler.population_size")
        if "n_startup_trials" in raw:
            self.leaf(_Leaf("int", low=0), raw["n_startup_trials"], "sampler.n_startup_trials")
        return SamplerSpec(kind, raw)

    def resources(self, value: Any) -> Resources:
        raw = self.mapping(value, "resources", ("cpu", "gpu", "concurrent"))
        cpu = self.leaf(_Leaf("float", low=0.0, low_open=True), raw.get("cpu", 1), "resources.cpu")
        gpu = self.leaf(_Leaf("float", low=0.0), raw.get("gpu", 0), "resources.gpu")
        if gpu > 1 and not float(gpu).is_integer():
            raise self.fail("resources.gpu", f"more than one GPU must be a whole number, got {gpu!r}")
        concurrent = raw.get("concurrent")
        if concurrent is not None:
            concurrent = self.leaf(_Leaf("int", low=1), concurrent, "resources.concurrent")
        return Resources(cpu=cpu, gpu=gpu, concurrent=concurrent)

    def scheduler(self, value: Any) -> SchedulerSpec:
        if value is None or isinstance(value, str):
            value = {"type": value or "none"}
        raw = self.mapping(value, "scheduler", ("type", "grace_epochs", "reduction_factor"))
        kind = raw.get("type", "none")
        if kind not in SCHEDULERS:
            raise self.fail("scheduler.type", f"{kind!r} is not one of {', '.join(SCHEDULERS)}")
        if kind == "none" and len(raw) > 1:
            raise self.fail("scheduler", "grace_epochs and reduction_factor need type: asha")
        grace = self.leaf(_Leaf("int", low=1), raw.get("grace_epochs", 1), "scheduler.grace_epochs")
        factor = self.leaf(
            _Leaf("float", low=1.0, low_open=True),
            raw.get("reduction_factor", 3),
            "scheduler.reduction_factor",
        )
        return SchedulerSpec(kind, grace, factor)

    def data(self, value: Any) -> C.DataConfig:
        fields = tuple(f.name for f in dataclasses.fields(C.DataConfig))
        raw = self.mapping(value, "data", fields)
        out: dict[str, Any] = {}
        for key, item in raw.items():
            if key in _DATA_LEAVES:
                out[key] = self.leaf(_DATA_LEAVES[key], item, f"data.{key}")
            elif item is not None and not isinstance(item, str):
                raise self.fail(f"data.{key}", f"expected a path, got {_kind(item)}")
            else:
                out[key] = item
        cfg = C.DataConfig(**out)
        if cfg.dataset == "npz" and not cfg.path:
            raise self.fail(
                "data.path", "dataset npz needs path: FILE.npz (x_train, y_train, x_test, y_test)"
            )
        if cfg.dataset == "imagefolder" and not cfg.root:
            raise self.fail(
                "data.root", "dataset imagefolder needs root: DIR with train/ and test/ class folders"
            )
        return cfg

    def train(self, value: Any) -> C.TrainConfig:
        raw = self.mapping(value, "train", tuple(_TRAIN_LEAVES))
        values = {k: self.leaf(_TRAIN_LEAVES[k], v, f"train.{k}") for k, v in raw.items()}
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return C.TrainConfig(**values)

    def deploy(self, value: Any) -> str:
        raw = self.mapping(value, "deploy", ("exit",))
        exit_ = str(raw.get("exit", "final"))
        if exit_ not in C.EXIT_NAMES:
            raise self.fail("deploy.exit", f"{raw.get('exit')!r} is not one of final, 1, 2, 3")
        return exit_

    # -- the space tree ----------------------------------------------------------------------------
    def dims(self, value: Any) -> dict[str, Dimension]:
        tree = self.mapping(value, "space", tuple(_SPACE_LEAVES))
        dims: dict[str, Dimension] = {}
        for section, leaves in _SPACE_LEAVES.items():
            given = self.mapping(tree.get(section), f"space.{section}", tuple(leaves))
            for leaf, schema in leaves.items():
                key = f"{section}.{leaf}"
                if leaf in given:
                    dims[key] = self.dimension(schema, given[leaf], key)
                elif section != "train":
                    dims[key] = Dimension(key, "fixed", value=_default(section, leaf))
        return dims

    def dimension(self, schema: _Leaf, value: Any, key: str) -> Dimension:
        path = f"space.{key}"
        if not isinstance(value, Mapping):
            return Dimension(key, "fixed", value=self.leaf(schema, value, path))
        kinds = [k for k in _DISTRIBUTIONS if k in value]
        if len(kinds) != 1:
            extra = [k for k in value if k not in ("step", "log", "min", *_DISTRIBUTIONS)]
            hint = _did_you_mean(str(extra[0]), _DISTRIBUTIONS) if extra else ""
            raise self.fail(
                path,
                f"expected a value or exactly one distribution of {', '.join(_DISTRIBUTIONS)}; "
                f"got keys {', '.join(map(str, value))}{hint}",
            )
        kind = kinds[0]
        options = {"choice": (), "subset": ("min",), "int": ("step", "log"), "float": ("step", "log")}[kind]
        for k in value:
            if k != kind and k not in options:
                raise self.fail(
                    f"{path}.{k}", f"not an option of {kind} (allowed: {', '.join(options) or 'none'})"
                )
        if kind == "choice":
            return self.choice(schema, value["choice"], key)
        if kind == "subset":
            return self.subset(schema, value, key)
        return self.range(schema, value, kind, key)

    def choice(self, schema: _Leaf, items: Any, key: str) -> Dimension:
        path = f"space.{key}.choice"
        if not isinstance(items, list) or not items:
            raise self.fail(path, f"expected a non-empty list of values, got {items!r}")
        checked = []
        for i, item in enumerate(items):
            if isinstance(item, (list, dict)):
                raise self.fail(
                    f"{path}[{i}]",
                    f"choices must be single values, got {item!r}"
                    + ("; use subset for placement" if key == "branches.placement" else ""),
                )
            checked.append(self.leaf(schema, item, f"{path}[{i}]"))
        if len(set(map(repr, checked))) != len(checked):
            raise self.fail(path, f"choices repeat: {items}")
        return Dimension(key, "choice", choices=tuple(checked))

    def subset(self, schema: _Leaf, spec: Mapping[str, Any], key: str) -> Dimension:
        path = f"space.{key}"
        if schema.kind not in ("ints", "floats"):
            raise self.fail(
                f"{path}.subset", "subset is only for list keys such as branches.placement; use choice"
            )
        items = self.leaf(schema, spec["subset"], f"{path}.subset")
        if not items:
            raise self.fail(f"{path}.subset", "expected a non-empty list of items")
        n_min = self.leaf(_Leaf("int", low=0), spec.get("min", 0), f"{path}.min")
        if n_min > len(items):
            raise self.fail(f"{path}.min", f"min {n_min} is more than the {len(items)} items of the subset")
        return Dimension(key, "subset", choices=tuple(items), min=n_min)

    def range(self, schema: _Leaf, spec: Mapping[str, Any], kind: str, key: str) -> Dimension:
        path = f"space.{key}.{kind}"
        bounds = spec[kind]
        if schema.kind not in ("int", "float") or (kind == "float" and schema.kind == "int"):
            allowed = (
                "choice"
                if schema.kind in ("enum", "bool")
                else ("int or choice" if schema.kind == "int" else "subset")
            )
            raise self.fail(path, f"a {kind} range does not fit this key (use {allowed})")
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise self.fail(path, f"expected [low, high], got {bounds!r}")
        item = _Leaf(kind, low=schema.low, high=schema.high, low_open=schema.low_open)
        low, high = (self.leaf(item, b, f"{path}[{i}]") for i, b in enumerate(bounds))
        if low > high:
            raise self.fail(path, f"low <= high must hold, but got (low={low}, high={high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"space.{key}.log", f"expected true or false, got {log!r}")
        if log and low <= 0:
            raise self.fail(path, f"log scale needs low > 0, got low={low}")
        step = spec.get("step")
        if step is not None:
            step = self.leaf(_Leaf(kind, low=0, low_open=True), step, f"space.{key}.step")
            if log:
                raise self.fail(f"space.{key}.step", "step and log cannot be combined (Optuna forbids it)")
        return Dimension(key, kind, low=low, high=high, step=step, log=log)

    def cross_checks(self, dims: Mapping[str, Dimension], deploy_exit: str, train: C.TrainConfig) -> None:
        """Rules over several keys: contradictions that make every config invalid."""
        nesterov = dims.get("train.nesterov", Dimension("train.nesterov", "fixed", value=train.nesterov))
        momentum = dims.get("train.momentum", Dimension("train.momentum", "fixed", value=train.momentum))
        lowest = momentum.value if momentum.is_fixed else min(momentum.choices or (momentum.low,))
        if True in _values(nesterov) and lowest == 0:
            key = "space.train.momentum" if "train.momentum" in dims else "train.momentum"
            raise self.fail(key, "nesterov needs momentum > 0 (raise momentum or set nesterov: false)")
        teacher, fusion = _values(dims["loss.teacher"]), _values(dims["fusion.type"])
        if teacher == ("fused",) and fusion == ("none",):
            raise self.fail(
                "space.loss.teacher",
                "teacher fused needs a fusion, but fusion.type is none "
                "(set fusion.type or use teacher deepest/ensemble)",
            )
        placement = dims["branches.placement"]
        if deploy_exit != "final":
            stage = int(deploy_exit)
            fixed_ok = placement.is_fixed and stage in placement.value
            if not fixed_ok:
                raise self.fail(
                    "deploy.exit",
                    f"exit {stage} must be in every config, so branches.placement must be "
                    f"a fixed list containing {stage} (or deploy the final exit)",
                )


def _default(section: str, leaf: str) -> Any:
    defaults = {
        "backbone": C.BackboneConfig(),
        "branches": C.BranchesConfig(),
        "cbfe": C.CBFEConfig(),
        "fusion": C.FusionConfig(),
        "loss": C.LossConfig(),
    }
    value = getattr(defaults[section], leaf)
    return list(value) if isinstance(value, tuple) else value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"text {value!r}", bool: f"{value}".lower()}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


# --------------------------------------------------------------------------------------------------
# Trainer configs and comparisons.


def config_to_document(
    config: TrialConfig, *, name: str, provenance: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A trainer-config document (same schema as a space, every value fixed) for ``config``.

    ``load_trial_config`` on the written YAML gives back ``config``.
    """
    d = config.to_dict()
    model = d["model"]
    doc: dict[str, Any] = {
        "name": name,
        "seed": config.seed,
        "data": d["data"],
        "train": d["train"],
        "space": {
            "backbone": model["backbone"],
            "branches": model["branches"],
            "cbfe": model["cbfe"],
            "fusion": model["fusion"],
            "loss": d["loss"],
        },
        "deploy": {"exit": config.deploy_exit},
    }
    doc["data"] = {k: v for k, v in doc["data"].items() if v is not None}
    if provenance:
        doc["provenance"] = _plain(dict(provenance))
    return doc


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Key paths whose values differ between two study specs, as ``key: old -> new`` lines."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes.extend(diff_documents(a, b, f"{path}."))
        elif _plain(a) != _plain(b):
            changes.append(f"{path}: {_short(a)} -> {_short(b)}")
    return changes


def _short(value: Any) -> str:
    text = json.dumps(_plain(value)) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."

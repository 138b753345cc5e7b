"""The Space: a validated space document that samples configs and hashes what defines its study.

A space file declares the study settings (name, storage, trials, sampler, objectives, budget,
resources, scheduler, data, train, deploy) and a ``space:`` tree whose every leaf is a literal or
one distribution. A *trainer config* is the same schema with no distributions left, so one loader
(:mod:`sdsearch.space.load`) and one validator serve ``run``, ``train``, ``cost`` and ``export``.
The schema comes from the leaf declarations in :mod:`sdsearch.core.config` (see
:mod:`sdsearch.space.schema`); this module turns a validated document into a :class:`Space` and
applies the rules that span several keys.

Validation errors are :class:`~sdsearch.core.errors.SpaceError`: ``FILE: key.path: what is wrong (allowed)``.
This module imports neither torch nor ray nor optuna, so ``sdsearch validate`` starts instantly; the
``trial`` passed to :meth:`Space.suggest` is duck-typed (any object with Optuna's ``suggest_*``).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from sdsearch.core import platforms
from sdsearch.core.config import (
    DEFAULT_ANYTIME_TARGET,
    LEAVES,
    SPACE_SECTIONS,
    DataConfig,
    DeployConfig,
    TrainConfig,
    TrialConfig,
)
from sdsearch.core.errors import ConfigError, SpaceError
from sdsearch.core.exits import ANYTIME, FINAL, exit_stage
from sdsearch.core.metrics import METRICS, quality_metrics, stored_limits
from sdsearch.core.registry import can_slice, cannot_slice
from sdsearch.space.document import plain
from sdsearch.space.schema import (
    ResourcesSetting,
    SamplerSetting,
    SchedulerSetting,
    SpaceDocument,
    describe,
    error_message,
)
from sdsearch.store.urls import storage_url

__all__ = ["Dimension", "Space", "parse_space"]


class SuggestTrial(Protocol):
    """What :meth:`Space.suggest` needs from an Optuna trial."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


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

    @classmethod
    def of(cls, key: str, given: Any) -> Dimension:
        """The dimension for a validated ``space:`` value (a literal or a distribution record)."""
        if not isinstance(given, BaseModel):
            return cls(key, "fixed", value=given)
        spec = dict(given)
        if "choice" in spec:
            return cls(key, "choice", choices=tuple(spec["choice"]))
        if "subset" in spec:
            return cls(key, "subset", choices=tuple(sorted(spec["subset"])), min=spec["min"])
        kind = "int" if "int" in spec else "float"
        low, high = spec[kind]
        return cls(key, kind, low=low, high=high, step=spec["step"], log=spec["log"])

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"

    @property
    def values(self) -> tuple[Any, ...]:
        """Every value it can take, for enumerated leaves (the fixed value, or the choices)."""
        return (self.value,) if self.is_fixed else self.choices

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
            return plain(self.value)
        if self.kind in ("choice", "subset"):
            spec: dict[str, Any] = {self.kind: plain(self.choices)}
            if self.kind == "subset":
                spec["min"] = self.min
            return spec
        spec = {self.kind: [self.low, self.high], "log": self.log}
        if self.step is not None:
            spec["step"] = self.step
        return spec

    def lowest(self) -> Any:
        """The smallest value it can take (numbers)."""
        if self.is_fixed:
            return self.value
        return min(self.choices) if self.kind == "choice" else self.low

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
# The space.


@dataclass(frozen=True)
class Space:
    """A validated space file. Build it with :func:`~sdsearch.space.load.load_space` or :func:`parse_space`.

    Invariant: every leaf in ``dims`` passed its declaration, and the value conditions of
    :mod:`sdsearch.core.config` are resolved at sampling time, so :meth:`suggest` only ever yields
    configs the network builder accepts (a subset below its ``min`` is the one exception,
    reported by :meth:`invalid_reason`).
    """

    source: str
    name: str
    storage: str
    n_trials: int
    seed: int
    sampler: SamplerSetting
    objectives: tuple[str, ...]
    budget: Mapping[str, float]
    resources: ResourcesSetting
    scheduler: SchedulerSetting
    data: DataConfig
    train: TrainConfig
    deploy: DeployConfig
    dims: Mapping[str, Dimension]
    document: Mapping[str, Any]
    provenance: Mapping[str, Any] | None = None
    #: The ``artifacts:`` folder as written (None: the storage's default, ``store.urls.artifacts_root``).
    artifacts: str | None = None

    @property
    def deploy_exit(self) -> str:
        return self.deploy.exit

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
        for key, dim in self.dims.items():
            leaf = LEAVES[key]
            if dim.is_fixed:
                continue
            if leaf.applies is not None and not all(
                leaf.applies.allows(v) for v in self._values(leaf.applies.key)
            ):
                out[key] = f"only when {leaf.applies}"
            for need in leaf.needs:
                if need.value in dim.values and not all(
                    need.when.allows(v) for v in self._values(need.when.key)
                ):
                    out[key] = f"{need.value} only when {need.when}"
        return out

    def _values(self, key: str) -> tuple[Any, ...]:
        dim = self.dims.get(key)
        if dim is not None:  # a numeric range by its bounds (rskd_layers applies when rskd_weight is not 0)
            return dim.values or (dim.low, dim.high)
        return (getattr(self.train, LEAVES[key].name),)

    # -- sampling ----------------------------------------------------------------------------------
    def suggest(self, trial: SuggestTrial) -> TrialConfig:
        """Sample one fully fixed config, define-by-run: conditional keys only where they apply.

        The config may still break a cross-key rule; :meth:`invalid_reason` says which.
        """
        values: dict[str, Any] = {}
        for key, leaf in LEAVES.items():
            dim = self.dims.get(key)
            if dim is None:
                continue
            if leaf.applies is not None and not leaf.applies.holds(values):
                values[key] = leaf.default
                continue
            name, choices = key, dim.choices if dim.kind == "choice" else None
            for need in leaf.needs:
                if choices is not None and need.value in choices and not need.when.holds(values):
                    name, choices = need.param, tuple(c for c in choices if c != need.value)
            values[key] = dim.suggest(trial, name=name, choices=choices)
        return self._config(values)

    @property
    def can_be_invalid(self) -> bool:
        """Whether :meth:`suggest` can yield a config that :meth:`invalid_reason` refuses."""
        return any(d.kind == "subset" and d.min > 0 for d in self.dims.values())

    def invalid_reason(self, config: TrialConfig) -> str | None:
        """Why a sampled config breaks a rule no single leaf can express (a subset under its ``min``)."""
        values = config.leaf_values()
        for key, dim in self.dims.items():
            if dim.kind == "subset" and len(values[key]) < dim.min:
                items = "exits" if key == "branches.placement" else "items"
                return f"{key}: {list(values[key])} has fewer than {dim.min} {items}"
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

    def _config(self, values: Mapping[str, Any]) -> TrialConfig:
        tree: dict[str, Any] = {
            "data": self.data.to_dict(),
            "train": self.train.to_dict(),
            "deploy": self.deploy.to_dict(),
            "seed": self.seed,
        }
        for key, value in values.items():
            leaf = LEAVES[key]
            node = tree
            for part in SPACE_SECTIONS[leaf.section]:
                node = node.setdefault(part, {})
            node[leaf.name] = value
        return TrialConfig.model_validate(tree)

    # -- identity ----------------------------------------------------------------------------------
    def study_spec(self) -> dict[str, Any]:
        """The parts that define the study's results: space, data, train, deploy, objectives, budget, seed.

        The seed is included: it fixes the validation split and the initial weights of every trial.
        Not trials, sampler, resources, scheduler or storage: changing those continues the study.
        Values equal to their declared default are left out, so a new option with a default does
        not make an existing study look changed.
        """
        space = {
            k: d.as_spec()
            for k, d in sorted(self.dims.items())
            if not (d.is_fixed and d.value == LEAVES[k].default)
        }
        return {
            "space": space,
            "data": self.data.model_dump(mode="json", exclude_defaults=True),
            "train": self.train.model_dump(mode="json", exclude_defaults=True),
            "deploy": self.deploy.model_dump(mode="json", exclude_defaults=True),
            "seed": self.seed,
            "objectives": list(self.objectives),
            "budget": dict(sorted(self.budget.items())),
        }

    def spec_hash(self) -> str:
        """Stable hash of :meth:`study_spec` (canonical JSON, sha256, 16 hex digits)."""
        blob = json.dumps(plain(self.study_spec()), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _NoTrial:
    """Stands in for an Optuna trial when a space has nothing to sample."""

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        raise RuntimeError(f"a fixed space sampled {name}")

    suggest_int = suggest_float = suggest_categorical


# --------------------------------------------------------------------------------------------------
# Building a Space from a validated document, and the rules that span several keys.


def _dims(document: SpaceDocument) -> dict[str, Dimension]:
    dims: dict[str, Dimension] = {}
    for key, leaf in LEAVES.items():
        section = getattr(document.space, leaf.section)
        given = getattr(section, leaf.name) if section is not None else None
        if given is not None:
            dims[key] = Dimension.of(key, given)
        elif leaf.section != "train":  # unsearched train keys come from the top-level train
            dims[key] = Dimension(key, "fixed", value=leaf.default)
    return _narrowed(dims)


def _narrowed(dims: dict[str, Dimension]) -> dict[str, Dimension]:
    """Where a leaf can only take values that need a condition (teacher fixed to ``fused``), narrow
    the condition's own leaf to the values that satisfy it (fusion.type without ``none``)."""
    for key, leaf in LEAVES.items():
        for need in leaf.needs:
            dim, other = dims.get(key), dims.get(need.when.key)
            if dim is None or other is None or set(dim.values) != {need.value} or other.is_fixed:
                continue
            kept = tuple(v for v in other.choices if need.when.allows(v))
            if kept and kept != other.choices:
                dims[other.key] = replace(other, choices=kept)
    return dims


#: Optuna samplers that read only COMPLETE trials (a PRUNED trial informs none of them).
_COMPLETE_ONLY_SAMPLERS = ("nsga2", "nsga3", "gp")


class _Rules:
    """Rules over several keys: contradictions that make every config of a space invalid."""

    def __init__(self, source: str, document: SpaceDocument, dims: Mapping[str, Dimension]) -> None:
        self.source, self.doc, self.dims = source, document, dims

    def fail(self, key: str, message: str) -> SpaceError:
        return SpaceError(self.source, key, message)

    def check(self) -> None:
        self.value_needs()
        self.nesterov()
        self.runtime()
        self.deploy()
        self.elastic()
        self.objectives()
        self.scheduler()

    def scheduler(self) -> None:
        """Valid but probably unintended: early stopping under a sampler that cannot learn from it."""
        if self.doc.scheduler.type != "none" and self.doc.sampler.type in _COMPLETE_ONLY_SAMPLERS:
            warnings.warn(
                f"{self.source}: sampler {self.doc.sampler.type} breeds only from COMPLETE trials, so the trials "
                f"{self.doc.scheduler.type} stops teach it nothing; tpe ranks them as unpromising (sampler: tpe)",
                UserWarning,
                stacklevel=5,
            )

    def train_dim(self, name: str) -> tuple[str, Dimension]:
        key = f"train.{name}"
        if key in self.dims:
            return f"space.{key}", self.dims[key]
        return key, Dimension(key, "fixed", value=getattr(self.doc.train, name))

    def value_needs(self) -> None:
        for key, leaf in LEAVES.items():
            for need in leaf.needs:
                dim, other = self.dims.get(key), self.dims.get(need.when.key)
                if dim is None or other is None or set(dim.values) != {need.value}:
                    continue
                if not any(need.when.allows(v) for v in other.values):
                    raise self.fail(
                        f"space.{key}",
                        f"{need.value} needs {need.when}, but {need.when.key} is "
                        f"{' or '.join(map(str, other.values))} (change space.{need.when.key} or {key})",
                    )

    def nesterov(self) -> None:
        _, nesterov = self.train_dim("nesterov")
        key, momentum = self.train_dim("momentum")
        if True in nesterov.values and momentum.lowest() == 0:
            raise self.fail(key, "nesterov needs momentum > 0 (raise momentum or set nesterov: false)")

    def runtime(self) -> None:
        """``deploy.runtime: tflm`` scores the int8 .tflite of a static exit, and needs the ``mcu`` extra."""
        deploy = self.doc.deploy
        if deploy.runtime != "tflm":
            return
        if deploy.exit == ANYTIME:
            raise self.fail(
                "deploy.runtime",
                "tflm runs a static exit's .tflite, and anytime models have none until a TFLite form exists: "
                "use runtime: onnxruntime, or deploy a static exit",
            )
        if deploy.quantize != "int8":
            raise self.fail(
                "deploy.runtime",
                "tflm scores the int8 .tflite; it needs quantize: int8 (or runtime: onnxruntime)",
            )
        missing = platforms.missing_mcu_packages()  # looked up here, so one patch serves every check
        if missing:
            raise self.fail(
                "deploy.runtime",
                f"tflm needs the mcu extra ({', '.join(missing)} not installed): {platforms.MCU_INSTALL}",
            )

    def deploy(self) -> None:
        deploy, placement = self.doc.deploy, self.dims["branches.placement"]
        if deploy.exit == ANYTIME:
            always = placement.min > 0 if placement.kind == "subset" else bool(placement.value)
            if not always:
                raise self.fail(
                    "deploy.exit",
                    "anytime needs a shallow exit in every config: give branches.placement a fixed "
                    "non-empty list, or a subset with min: 1",
                )
            if deploy.quantize != "none":
                raise self.fail("deploy.quantize", "int8 quantization of anytime models is not supported yet")
            budget = {m for m, v in dict(self.doc.budget).items() if v is not None}
            if "latency" in set(self.doc.objectives) | budget:
                raise self.fail(
                    "deploy.exit",
                    "the latency of anytime models is not measured yet: drop latency from objectives and "
                    "budget, or deploy a static exit",
                )
        elif deploy.exit != FINAL:
            stage = exit_stage(deploy.exit)
            if not (placement.is_fixed and stage in placement.value):
                raise self.fail(
                    "deploy.exit",
                    f"exit {stage} must be in every config, so branches.placement must be "
                    f"a fixed list containing {stage} (or deploy the final exit)",
                )
        if deploy.target is not None and deploy.exit != ANYTIME:
            raise self.fail("deploy.target", "a target calibrates anytime thresholds; it needs exit: anytime")
        if deploy.quantize == "int8" and deploy.dtype != "int8":
            raise self.fail(
                "deploy.dtype", "quantize: int8 deploys an int8 model; set dtype: int8 (or quantize: none)"
            )

    def elastic(self) -> None:
        key, widths = self.train_dim("elastic_widths")
        if widths.is_fixed and not widths.value:
            return
        unsliceable = [a for a in self.dims["backbone.arch"].values if not can_slice(a)]
        if unsliceable:
            raise self.fail(key, cannot_slice(unsliceable[0]))
        if self.doc.deploy.exit == ANYTIME:
            raise self.fail(
                key, "an elastic trial deploys one exit at one width; deploy.exit: anytime needs it empty"
            )

    def objectives(self) -> None:
        objectives = self.doc.objectives
        for i, name in enumerate(objectives):
            if METRICS.get(name).anytime and self.doc.deploy.exit != ANYTIME:
                raise self.fail(f"objectives[{i}]", f"{name} needs deploy.exit: anytime")
        if len(set(objectives)) != len(objectives):
            raise self.fail("objectives", f"objectives repeat: {objectives}")
        if not any(name in quality_metrics() for name in objectives):
            raise self.fail(
                "objectives",
                f"must include {' or '.join(quality_metrics())} (what would the search maximise?)",
            )
        if "macs" in objectives and "flops" in objectives:
            raise self.fail("objectives", "use macs or flops, not both (flops = 2 x macs)")


def _storage(value: str | None, name: str, source: str) -> str:
    try:
        return storage_url(value, study_name=name)
    except ConfigError as exc:
        raise SpaceError(source, "storage", exc.message) from None


def parse_space(document: Any, *, source: str = "<string>", default_name: str = "study") -> Space:
    """Validate a parsed YAML document (see :func:`~sdsearch.space.load.load_space`)."""
    if not isinstance(document, Mapping):
        raise SpaceError(
            source,
            "",
            f"the document must be a mapping with keys such as name, space, train; got {describe(document)}",
        )
    try:
        doc = SpaceDocument.model_validate(document)
    except ValidationError as exc:
        key, message = error_message(exc)
        raise SpaceError(source, key, message) from None
    dims = _dims(doc)
    _Rules(source, doc, dims).check()
    name = doc.name or re.sub(r"[^A-Za-z0-9_.-]", "_", default_name)
    deploy = doc.deploy
    if deploy.exit == ANYTIME and deploy.target is None:
        deploy = deploy.replace(target=DEFAULT_ANYTIME_TARGET)
    return Space(
        source=source,
        name=name,
        storage=_storage(doc.storage, name, source),
        n_trials=doc.trials,
        seed=doc.seed,
        sampler=doc.sampler,
        objectives=tuple(doc.objectives),
        budget=stored_limits({m: v for m, v in dict(doc.budget).items() if v is not None}),
        resources=doc.resources,
        scheduler=doc.scheduler,
        data=doc.data,
        train=doc.train,
        deploy=deploy,
        dims=dims,
        document=plain(dict(document)),
        provenance=doc.provenance,
        artifacts=doc.artifacts,
    )

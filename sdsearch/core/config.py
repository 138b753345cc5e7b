"""The one declaration of every configuration leaf: type, default, allowed values or range, and the
condition under which it applies.

These frozen pydantic records are what a trial builds and trains (like Optuna's ``FrozenTrial``:
plain, picklable, cheap to send to Ray workers), and the schema of the YAML file is derived from
them: :mod:`sdsearch.space.schema` wraps each searchable leaf in the distributions it accepts, and
:mod:`sdsearch.space.space` samples, writes and hashes by walking :data:`LEAVES`. Adding a searchable key
is one field here.

Conditions are data: :class:`AppliesWhen` marks a leaf that is only sampled when another leaf's
value allows it (``cbfe.ratio`` only when CBFE is on); :class:`ValueNeeds` marks one *value* of a
leaf that needs another leaf's value (``teacher: fused`` needs a fusion).

Example:
    >>> cfg = TrialConfig(model=ModelConfig(backbone=BackboneConfig(width=0.25)))
    >>> cfg.model.exits, cfg.deploy.exit
    (('1', '2', '3', 'final'), 'final')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from sdsearch.core.exits import ANYTIME, DEPLOY_EXITS, FINAL, N_STAGES, exit_names
from sdsearch.core.platforms import DEFAULT_PLATFORM, PLATFORMS
from sdsearch.core.registry import BACKBONES, BRANCH_STYLES, DATASETS, FUSIONS, Registry, did_you_mean
from sdsearch.core.units import DTYPES, Unit, parse

__all__ = [
    "DEFAULT_ANYTIME_TARGET",
    "LEAVES",
    "RUNTIMES",
    "SPACE_SECTIONS",
    "AnytimeTarget",
    "AppliesWhen",
    "BackboneConfig",
    "BranchesConfig",
    "CBFEConfig",
    "DataConfig",
    "DeployConfig",
    "FusionConfig",
    "LatencyConfig",
    "Leaf",
    "LossConfig",
    "ModelConfig",
    "OneOf",
    "Record",
    "TrainConfig",
    "TrialConfig",
    "ValueNeeds",
    "When",
]


# --------------------------------------------------------------------------------------------------
# Conditions and value sets, as data the schema, the sampler and the docs read.


@dataclass(frozen=True)
class When:
    """A condition on another leaf: its value is (``in_``) or is not (``not_in``) one of some values."""

    key: str
    in_: tuple[Any, ...] | None = None
    not_in: tuple[Any, ...] | None = None

    def holds(self, values: Mapping[str, Any]) -> bool:
        value = values[self.key]
        return value in self.in_ if self.in_ is not None else value not in (self.not_in or ())

    def allows(self, value: Any) -> bool:
        """Whether ``value`` of :attr:`key` satisfies the condition."""
        return self.holds({self.key: value})

    def __str__(self) -> str:
        if self.in_ is not None:
            return f"{self.key} is {' or '.join(map(str, self.in_))}"
        return f"{self.key} is not {' or '.join(map(str, self.not_in or ()))}"


@dataclass(frozen=True)
class AppliesWhen:
    """Annotated marker: the leaf is sampled (and used) only when ``when`` holds; else its default."""

    when: When


@dataclass(frozen=True)
class ValueNeeds:
    """Annotated marker: ``value`` of this leaf may be chosen only when ``when`` holds.

    Where it does not hold the leaf is sampled without ``value`` under the Optuna name ``param``
    (Optuna refuses a categorical whose choices change under one name).
    """

    value: Any
    when: When
    param: str


class OneOf:
    """Annotated marker: the value must be one of a fixed tuple or of a :class:`Registry`'s names.

    Messages name the allowed values (from the registry, so plugins are listed) with a
    did-you-mean; the JSON Schema lists them as an ``enum``.
    """

    def __init__(self, values: tuple[Any, ...] | Registry[Any], coerce: Callable[[Any], Any] | None = None):
        self.values = values
        self.coerce = coerce

    def names(self) -> list[Any]:
        return self.values.names() if isinstance(self.values, Registry) else list(self.values)

    def problem(self, value: Any) -> str | None:
        if isinstance(self.values, Registry):
            return self.values.problem(value)
        if isinstance(value, bool) or value not in self.values:
            names = [str(v) for v in self.values]
            return f"{value!r} is not one of {', '.join(names)}{did_you_mean(str(value), names)}"
        return None

    def _check(self, given: Any) -> Any:
        value = self.coerce(given) if self.coerce is not None else given
        problem = self.problem(value)
        if problem and value is not given:
            problem = self.problem(given)
        if problem:
            raise PydanticCustomError(
                "not_one_of", "{problem}", {"problem": problem, "allowed": self.names()}
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> Any:
        enum = {"enum": self.names()}
        if isinstance(self.values, Registry) and self.values.import_strings:
            pattern = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"}
            return {"anyOf": [enum, pattern], "description": "a registered name or package.module:factory"}
        return enum


def _exit_name(value: Any) -> Any:
    # YAML reads `exit: 2` as an integer; exit names are strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
PosFloat = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
#: A width multiplier of an elastic network: a fraction of ``backbone.width``, in (0, 1].
Multiplier = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
Path = Annotated[str, Strict()]


def in_unit(unit: Unit) -> BeforeValidator:
    """Read strings with a unit (``200k``, ``0.5%``, ``64KiB``) as numbers in the stored unit."""

    def read(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse(value, unit)
            except ValueError as exc:
                raise PydanticCustomError("unit", "{problem}", {"problem": str(exc)}) from None
        return value

    return BeforeValidator(read)


class Record(BaseModel):
    """Frozen, strict record: unknown keys are refused with the allowed ones and a did-you-mean.

    ``None`` for a whole section means "all defaults" (YAML ``backbone:`` with nothing under it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, BaseModel):
            return data
        allowed = list(cls.model_fields)
        if not isinstance(data, Mapping):
            raise PydanticCustomError(
                "mapping", "expected a mapping of {allowed}", {"allowed": ", ".join(allowed), "input": data}
            )
        for key in data:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key (allowed: {allowed}){hint}",
                    {"key": str(key), "allowed": ", ".join(allowed), "hint": hint},
                )
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples): JSON/YAML friendly and stable."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        return cls.model_validate(data)

    def replace(self, **changes: Any) -> Any:
        """A validated copy with fields replaced (``cfg.replace(train=cfg.train.replace(epochs=3))``)."""
        return type(self).model_validate({**dict(self), **changes})


# --------------------------------------------------------------------------------------------------
# The model.


def _unique_items(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        seen = [v for v in value if not isinstance(v, bool)]
        if len(set(seen)) != len(seen):
            raise PydanticCustomError(
                "not_unique", "items must be unique, got {items}", {"items": list(value)}
            )
    return value


Stage = Annotated[int, Strict(), OneOf(tuple(range(1, N_STAGES)))]

#: Loss styles: whose CE weighting and KD form (see ``sdsearch.nn.losses``).
LOSS_STYLES = ("byot", "sd")
#: Feature-hint forms.
HINTS = ("adapter", "byot")
#: Where RSKD's residual heads sit.
RSKD_LAYERS = ("last", "all")


class BackboneConfig(Record):
    """Backbone family and size: ``width`` scales channels, ``depth`` is blocks per stage."""

    arch: Annotated[str, OneOf(BACKBONES)] = "resnet"
    width: Annotated[float, Strict(), Field(gt=0, le=4, allow_inf_nan=False)] = 1.0
    depth: Annotated[int, Strict(), Field(ge=1, le=8)] = 2
    #: MobileNetV2's last 1x1 conv to 1280·w channels (the paper's; it widens every exit branch).
    last_channel: Annotated[Bool, AppliesWhen(When("backbone.arch", in_=("mobilenetv2",)))] = False
    #: Zero the last BN of each residual block so it starts as identity (timm's default; BYOT and SD
    #: do not). Built-in backbones only: a user's factory takes (in_chans, width, depth).
    zero_init_last: Annotated[Bool, AppliesWhen(When("backbone.arch", in_=("resnet", "mobilenetv2")))] = True


class BranchesConfig(Record):
    """Shallow exits: ``placement`` lists the stages (1-3) followed by an exit branch."""

    placement: Annotated[tuple[Stage, ...], BeforeValidator(_unique_items)] = (1, 2, 3)
    style: Annotated[str, OneOf(BRANCH_STYLES)] = "sd"

    @field_validator("placement")
    @classmethod
    def _sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(value))


class CBFEConfig(Record):
    """Channel-based feature enhancement (Zheng et al. 2025); ``ratio`` is the reduction r."""

    location: Annotated[str, OneOf(("none", "branch", "trunk"))] = "none"
    ratio: Annotated[PosInt, AppliesWhen(When("cbfe.location", not_in=("none",)))] = 4


class FusionConfig(Record):
    """How branch maps and the deepest map are fused into an extra training-time head."""

    type: Annotated[str, OneOf(FUSIONS)] = "none"


class ModelConfig(Record):
    """Everything that decides the architecture (data decides in_chans, classes, input size)."""

    backbone: BackboneConfig = BackboneConfig()
    branches: BranchesConfig = BranchesConfig()
    cbfe: CBFEConfig = CBFEConfig()
    fusion: FusionConfig = FusionConfig()

    @property
    def exits(self) -> tuple[str, ...]:
        """Exit names in depth order, the final exit last."""
        return exit_names(self.branches.placement)

    def at_width(self, multiplier: float) -> ModelConfig:
        """This model with ``backbone.width`` times ``multiplier`` (a width of an elastic network)."""
        return self.replace(backbone=self.backbone.replace(width=self.backbone.width * multiplier))


class LossConfig(Record):
    """Self-distillation loss; the defaults are the BYOT/SD reproduction setting (see losses.py)."""

    teacher: Annotated[
        str,
        OneOf(("deepest", "fused", "ensemble")),
        ValueNeeds("fused", When("fusion.type", not_in=("none",)), param="loss.teacher_without_fusion"),
    ] = "deepest"
    #: alpha of BYOT and SD: the KD term's weight, and CE keeps (1 - alpha).
    kd_weight: UnitFloat = 0.3
    temperature: PosFloat = 3.0
    #: Hinton's T² factor on the KD term. Off: BYOT's eq. 1 and the SD code have none (an unofficial
    #: BYOT re-implementation multiplies by T², as sdsearch 0.2 did).
    kd_t2: Bool = False
    feature_weight: NonNegFloat = 0.03
    #: The feature hint: ``adapter`` compares conv1x1(G_i) with the teacher map (the SD code's
    #: adaptation layers); ``byot`` compares G_i itself (BYOT: the bottleneck is the adaptation).
    hint: Annotated[str, OneOf(HINTS), AppliesWhen(When("loss.feature_weight", not_in=(0,)))] = "adapter"
    #: RSKD (Liu et al. 2025): weight of the residual-gap regression (0 = off).
    rskd_weight: NonNegFloat = 0.0
    #: ``last``: each student exit's last feature map learns the teacher-student logit gap; ``all``
    #: adds the intermediate extension (the map a branch reads learns the deeper feature gap).
    rskd_layers: Annotated[str, OneOf(RSKD_LAYERS), AppliesWhen(When("loss.rskd_weight", not_in=(0,)))] = (
        "last"
    )
    ce_weight: NonNegFloat = 1.0
    style: Annotated[str, OneOf(LOSS_STYLES)] = "byot"


# --------------------------------------------------------------------------------------------------
# Data, training, deployment.


class DataConfig(Record):
    """Dataset and the seeded, stratified validation split carved from its training part."""

    dataset: Annotated[str, OneOf(DATASETS)] = "digits"
    val_fraction: Annotated[float, Strict(), Field(gt=0, le=0.9)] = 0.2
    root: Path | None = None
    download: Bool = False
    path: Path | None = None
    augment: Annotated[str, OneOf(("auto", "none", "crop", "crop_flip"))] = "auto"

    @model_validator(mode="after")
    def _required_keys(self) -> DataConfig:
        for key, help_text in DATASETS.get(self.dataset).requires.items():
            if not getattr(self, key):
                raise PydanticCustomError("missing_key", "{help}", {"key": key, "help": help_text})
        return self


class TrainConfig(Record):
    """Optimisation settings; ``milestones`` are fractions of ``epochs`` for ``schedule: step``."""

    epochs: PosInt = 10
    batch_size: PosInt = 128
    optimizer: Annotated[str, OneOf(("sgd", "adamw"))] = "sgd"
    lr: PosFloat = 0.05
    momentum: UnitFloat = 0.9
    nesterov: Bool = False
    weight_decay: NonNegFloat = 5.0e-4
    schedule: Annotated[str, OneOf(("cosine", "step", "constant"))] = "cosine"
    warmup_epochs: NonNegInt = 0
    milestones: tuple[UnitFloat, ...] = (0.5, 0.75)
    gamma: PosFloat = 0.1
    amp: Bool = True
    channels_last: Bool = True
    #: Elastic (slimmable) training: the multipliers of ``backbone.width`` the one trained network runs
    #: at, each (width, exit) a candidate (sandwich rule, in-place distillation; sdsearch.nn.elastic).
    #: Empty: off.
    elastic_widths: Annotated[tuple[Multiplier, ...], BeforeValidator(_unique_items)] = ()

    @field_validator("elastic_widths")
    @classmethod
    def _widest_first(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(sorted(value, reverse=True))


class LatencyConfig(Record):
    """How the ``latency`` metric is measured: ONNX Runtime threads, timed runs, warm-up runs."""

    threads: PosInt = 1
    repeats: PosInt = 50
    warmup: NonNegInt = 10


class AnytimeTarget(Record):
    """What anytime thresholds are calibrated for: one of an accuracy drop or an expected-MACs cap."""

    accuracy_drop: Annotated[float, Strict(), Field(ge=0, lt=1), in_unit("fraction")] | None = None
    expected_macs: Annotated[PosFloat, in_unit("count")] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AnytimeTarget:
        if (self.accuracy_drop is None) == (self.expected_macs is None):
            raise PydanticCustomError(
                "target", "give exactly one of accuracy_drop (e.g. 0.5%) or expected_macs (e.g. 200k)", {}
            )
        return self


#: What ``deploy.exit: anytime`` calibrates for when ``deploy.target`` is not given.
DEFAULT_ANYTIME_TARGET = AnytimeTarget(accuracy_drop=0.005)


#: ``deploy.runtime`` values: where int8 accuracy is measured.
RUNTIMES = ("onnxruntime", "tflm")


class DeployConfig(Record):
    """What is deployed and in which precision; the deploy-cost metrics follow ``dtype``."""

    exit: Annotated[str, OneOf(DEPLOY_EXITS, coerce=_exit_name)] = FINAL
    dtype: Annotated[str, OneOf(DTYPES)] = "int8"
    quantize: Annotated[str, OneOf(("none", "int8"))] = "none"
    latency: LatencyConfig = LatencyConfig()
    target: AnytimeTarget | None = None
    #: The runtime that scores int8 accuracy (``quantize: int8``): ONNX Runtime on the host, or the
    #: .tflite in TensorFlow Lite Micro (the ``mcu`` extra).
    runtime: Annotated[str, OneOf(RUNTIMES)] = "onnxruntime"
    #: The microcontroller the int8 peak memory and size are computed for (sdsearch.core.platforms).
    platform: Annotated[str, OneOf(tuple(PLATFORMS))] = DEFAULT_PLATFORM


class TrialConfig(Record):
    """One fully fixed configuration: model, loss, data, training, deployment and seed.

    ``deploy.exit`` is one of ``model.exits`` (or ``anytime``); its accuracy and costs are the
    trial's objective values. ``seed`` seeds weights, augmentation and batch order.
    """

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    deploy: DeployConfig = DeployConfig()
    seed: NonNegInt = 0

    @model_validator(mode="before")
    @classmethod
    def _stored_by_0_1(cls, data: Any) -> Any:
        # sdsearch 0.1 stored `deploy_exit: "2"` at the top; studies written then still load.
        if isinstance(data, Mapping) and "deploy_exit" in data:
            data = dict(data)
            data["deploy"] = {**(data.get("deploy") or {}), "exit": data.pop("deploy_exit")}
        return data

    @model_validator(mode="after")
    def _value_needs(self) -> TrialConfig:
        values = self.leaf_values()
        for key, leaf in LEAVES.items():
            for need in leaf.needs:
                if values[key] == need.value and not need.when.holds(values):
                    raise PydanticCustomError(
                        "value_needs",
                        "{value} needs {when}",
                        {"key": key, "value": need.value, "when": str(need.when)},
                    )
        return self

    @model_validator(mode="after")
    def _elastic_static_exit(self) -> TrialConfig:
        if self.train.elastic_widths and self.deploy.exit == ANYTIME:
            raise PydanticCustomError(
                "elastic_anytime",
                "an elastic trial deploys one exit at one width; deploy.exit: anytime needs "
                "train.elastic_widths empty",
                {"key": "train.elastic_widths"},
            )
        return self

    @property
    def deploy_exit(self) -> str:
        """The deployed exit's name (``deploy.exit``)."""
        return self.deploy.exit

    @property
    def elastic(self) -> bool:
        """Whether the trial trains one network at several widths (``train.elastic_widths``)."""
        return bool(self.train.elastic_widths)

    def at_width(self, multiplier: float) -> TrialConfig:
        """The plain config of this network at ``multiplier`` times its width: what the candidates
        ``EXIT@multiplier`` of an elastic trial deploy, and what retraining one from scratch trains."""
        return self.replace(
            model=self.model.at_width(multiplier), train=self.train.replace(elastic_widths=())
        )

    @property
    def static_exit(self) -> str:
        """The exit a single static model deploys: ``deploy.exit``, or the final exit for an anytime
        deployment (whose accuracy exists only after calibration)."""
        return FINAL if self.deploy.exit == ANYTIME else self.deploy.exit

    def leaf_values(self) -> dict[str, Any]:
        """Every searchable leaf's value, by key (``{"backbone.width": 0.25, ...}``)."""
        out: dict[str, Any] = {}
        for key, leaf in LEAVES.items():
            node: Any = self
            for part in SPACE_SECTIONS[leaf.section]:
                node = getattr(node, part)
            out[key] = getattr(node, leaf.name)
        return out


# --------------------------------------------------------------------------------------------------
# The searchable leaves, walked by the schema, the sampler, the writer and the reports.

#: ``space:`` section -> the TrialConfig attribute path it fills: the YAML layout, in one place.
SPACE_SECTIONS: dict[str, tuple[str, ...]] = {
    "backbone": ("model", "backbone"),
    "branches": ("model", "branches"),
    "cbfe": ("model", "cbfe"),
    "fusion": ("model", "fusion"),
    "loss": ("loss",),
    "train": ("train",),
}


@dataclass(frozen=True)
class Leaf:
    """One searchable key, e.g. ``backbone.width``, as declared by its record field."""

    key: str
    section: str
    name: str
    record: type[Record]
    default: Any
    applies: When | None
    needs: tuple[ValueNeeds, ...]

    @property
    def annotation(self) -> Any:
        return self.record.model_fields[self.name].annotation

    @property
    def metadata(self) -> list[Any]:
        return list(self.record.model_fields[self.name].metadata)

    @property
    def values(self) -> list[Any] | None:
        """The allowed values of an enumerated leaf (None for numbers)."""
        one_of = next((m for m in self.metadata if isinstance(m, OneOf)), None)
        return one_of.names() if one_of else None

    @property
    def kind(self) -> str:
        """``int``, ``float``, ``bool``, ``text`` or ``list`` (what distributions fit it)."""
        base = self.annotation
        if getattr(base, "__origin__", None) is tuple:
            return "list"
        return {int: "int", float: "float", bool: "bool"}.get(base, "text")


def _record_at(path: tuple[str, ...]) -> type[Record]:
    record: type[Record] = TrialConfig
    for part in path:
        record = record.model_fields[part].annotation  # type: ignore[assignment]
    return record


def _leaves() -> dict[str, Leaf]:
    leaves: dict[str, Leaf] = {}
    for section, path in SPACE_SECTIONS.items():
        record = _record_at(path)
        for name, info in record.model_fields.items():
            meta = list(info.metadata)
            applies = next((m.when for m in meta if isinstance(m, AppliesWhen)), None)
            needs = tuple(m for m in meta if isinstance(m, ValueNeeds))
            key = f"{section}.{name}"
            leaves[key] = Leaf(key, section, name, record, info.default, applies, needs)
    return leaves


#: Every searchable leaf, in sampling order (a condition only refers to an earlier leaf).
LEAVES: dict[str, Leaf] = _leaves()

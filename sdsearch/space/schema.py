"""The space file's schema, derived from the leaf declarations in :mod:`sdsearch.core.config`.

Each searchable leaf of a ``space:`` section accepts its own type (a fixed value) or one
distribution that fits it: ``choice`` for any leaf, ``int`` / ``float`` ranges for numbers of that
kind, ``subset`` for list leaves. The study settings (sampler, objectives, budget, resources,
scheduler) are records here; ``data``, ``train`` and ``deploy`` are the config records themselves.
One pydantic model therefore gives validation with key paths, the defaults and the JSON Schema
(``sdsearch schema``); :func:`error_message` turns pydantic's first error into sdsearch's one line,
``key.path: what is wrong (allowed)``.

Why pydantic and a little formatting, not a hand-written validator: pydantic's ``loc`` is the key
path and its error ``type``/``ctx`` carry what was wrong, so messages come from data rather than a
second validator. What pydantic does not do for us is kept small and here: messages in our words,
did-you-mean (in :class:`sdsearch.core.config.Record`), and rules that span several keys (in
:mod:`sdsearch.space.space`).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sdsearch.core.config import (
    LEAVES,
    SPACE_SECTIONS,
    Bool,
    DataConfig,
    DeployConfig,
    Leaf,
    NonNegInt,
    OneOf,
    PosFloat,
    PosInt,
    Record,
    TrainConfig,
)
from sdsearch.core.metrics import METRICS, budget_metrics
from sdsearch.core.registry import SAMPLERS, did_you_mean
from sdsearch.core.units import parse

__all__ = ["DISTRIBUTIONS", "SCHEDULERS", "SpaceDocument", "describe", "error_message", "json_schema"]

DISTRIBUTIONS = ("choice", "int", "float", "subset")
SCHEDULERS = ("none", "asha", "moasha")
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
DEFAULT_OBJECTIVES = ("accuracy", "params", "macs")
#: Tags of the union each searchable leaf is; they appear in pydantic's ``loc`` and are dropped.
_TAG = "~"


# --------------------------------------------------------------------------------------------------
# Distributions over one leaf.


def _single_value(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        raise PydanticCustomError(
            "choice_item",
            "choices must be single values, got {value}; use subset for list keys such as branches.placement",
            {"value": value},
        )
    return value


def _bounds(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=2, max_length=2)]


class _Distribution(Record):
    """A distribution's own checks: the first bad option is named by its key (ctx ``key``)."""

    @staticmethod
    def fail(key: str, message: str, **ctx: Any) -> PydanticCustomError:
        return PydanticCustomError("distribution_rule", message, {"key": key, **ctx})


class _Range(_Distribution):
    step: Any = None
    log: Bool = False

    @model_validator(mode="after")
    def _order(self) -> _Range:
        kind = "int" if "int" in type(self).model_fields else "float"
        low, high = getattr(self, kind)
        if low > high:
            raise self.fail(
                kind, "low <= high must hold, but got (low={low}, high={high})", low=low, high=high
            )
        if self.log and low <= 0:
            raise self.fail(kind, "log scale needs low > 0, got low={low}", low=low)
        if self.step is not None and self.log:
            raise self.fail("step", "step and log cannot be combined (Optuna forbids it)")
        return self


class _Choice(_Distribution):
    @model_validator(mode="after")
    def _unique(self) -> _Choice:
        items = self.choice  # type: ignore[attr-defined]
        if len({repr(v) for v in items}) != len(items):
            raise self.fail("choice", "choices repeat: {items}", items=list(items))
        return self


class _Subset(_Distribution):
    min: NonNegInt = 0

    @model_validator(mode="after")
    def _size(self) -> _Subset:
        items = self.subset  # type: ignore[attr-defined]
        if not items:
            raise self.fail("subset", "expected a non-empty list of items")
        if self.min > len(items):
            raise self.fail(
                "min", "min {min} is more than the {n} items of the subset", min=self.min, n=len(items)
            )
        return self


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        kinds = [k for k in DISTRIBUTIONS if k in value]
        return f"{_TAG}{kinds[0]}" if len(kinds) == 1 else f"{_TAG}malformed"
    return f"{_TAG}fixed"


def _malformed(value: Any) -> Any:
    keys = ", ".join(map(str, value))
    extra = [str(k) for k in value if k not in ("step", "log", "min", *DISTRIBUTIONS)]
    hint = did_you_mean(extra[0], DISTRIBUTIONS) if extra else ""
    raise PydanticCustomError(
        "distribution",
        "expected a value or exactly one distribution of {kinds}; got keys {keys}{hint}",
        {"kinds": ", ".join(DISTRIBUTIONS), "keys": keys, "hint": hint},
    )


def _distribution_kinds(leaf: Leaf) -> tuple[str, ...]:
    """The distributions that fit a leaf: what its values can be drawn from."""
    return {
        "int": ("choice", "int"),
        "float": ("choice", "float"),
        "list": ("subset",),
    }.get(leaf.kind, ("choice",))


def _searchable(leaf: Leaf) -> Any:
    """The type of a ``space:`` leaf: its value, or one distribution that fits it."""
    field = leaf.record.model_fields[leaf.name]
    meta = tuple(field.metadata)
    value_type = Annotated[(field.annotation, *meta)] if meta else field.annotation  # type: ignore[misc]
    name = "".join(p.title() for p in leaf.key.replace(".", "_").split("_"))
    members: list[Any] = [Annotated[value_type, Tag(f"{_TAG}fixed")]]
    for kind in _distribution_kinds(leaf):
        if kind == "choice":
            item = Annotated[value_type, BeforeValidator(_single_value)]
            model = create_model(
                f"{name}Choice", __base__=_Choice, choice=(Annotated[list[item], Field(min_length=1)], ...)
            )
        elif kind == "subset":
            model = create_model(f"{name}Subset", __base__=_Subset, subset=(value_type, ...))
        else:
            number = int if kind == "int" else float
            step = Annotated[number, Strict(), Field(gt=0)] | None  # type: ignore[valid-type]
            model = create_model(
                f"{name}{kind.title()}Range",
                __base__=_Range,
                step=(step, None),
                **{kind: (_bounds(value_type), ...)},
            )
        members.append(Annotated[model, Tag(f"{_TAG}{kind}")])
    # Never valid: a mapping with no (or two) distributions; the JSON Schema matches nothing for it.
    malformed = Annotated[Any, BeforeValidator(_malformed), WithJsonSchema({"not": {}})]
    members.append(Annotated[malformed, Tag(f"{_TAG}malformed")])
    return Annotated[Union[tuple(members)], Discriminator(_kind_of)]  # noqa: UP007 - a runtime union


def _section_model(section: str) -> type[Record]:
    leaves = [leaf for leaf in LEAVES.values() if leaf.section == section]
    fields = {leaf.name: (_searchable(leaf) | None, None) for leaf in leaves}
    return create_model(f"{section.title()}Space", __base__=Record, **fields)


SearchTree = create_model(
    "SearchTree",
    __base__=Record,
    **{section: (_section_model(section) | None, None) for section in SPACE_SECTIONS},
)


# --------------------------------------------------------------------------------------------------
# Study settings.


_OPTION_TYPES: dict[str, Any] = {
    "count": NonNegInt,
    "count1": PosInt,
    "count2": Annotated[int, Strict(), Field(ge=2)],
    "prob": Annotated[float, Strict(), Field(ge=0, le=1)],
    "flag": Bool,
    "text": Annotated[str, Strict()],
}


@functools.cache
def _sampler_options(kind: str) -> type[Record]:
    options = SAMPLERS.get(kind).options
    fields = {name: (_OPTION_TYPES[t] | None, None) for name, t in options.items()}
    return create_model(f"{kind.title()}Options", __base__=Record, **fields)


def _sampler_json_schema(schema: dict[str, Any]) -> None:
    """The YAML forms: a sampler name, or a mapping of ``type`` and that sampler's options."""
    forms: list[dict[str, Any]] = [{"type": "string", "enum": SAMPLERS.names()}]
    for name in SAMPLERS.names():
        options = _sampler_options(name).model_json_schema()
        forms.append(
            {
                "type": "object",
                "properties": {"type": {"const": name}, **options.get("properties", {})},
                "additionalProperties": False,
                **({} if name == "tpe" else {"required": ["type"]}),
            }
        )
    schema.clear()
    schema.update(anyOf=forms, description="an Optuna sampler: a name, or {type: NAME, option: value, ...}")


class SamplerSetting(BaseModel):
    """``sampler: tpe`` or ``sampler: {type: nsga2, population_size: 16}``: an Optuna sampler and its options."""

    type: Annotated[str, OneOf(SAMPLERS)] = "tpe"
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            problem = SAMPLERS.problem(value)
            if problem:  # given as a name: the key is `sampler`, not `sampler.type`
                raise PydanticCustomError("not_one_of", "{problem}", {"problem": problem})
            return {"type": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "mapping", "expected a sampler name or a mapping with type and options", {}
            )
        value = dict(value)
        kind = value.pop("type", "tpe")
        if SAMPLERS.problem(kind):
            return {"type": kind}  # the type field reports it
        allowed = list(SAMPLERS.get(kind).options)
        for option in value:
            if option not in allowed:
                raise PydanticCustomError(
                    "unknown_key",
                    "not an option of the {kind} sampler (allowed: {allowed})",
                    {"key": str(option), "kind": kind, "allowed": ", ".join(allowed) or "no options"},
                )
        try:
            options = _sampler_options(kind).model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PydanticCustomError(
                "sampler_option",
                "{problem}",
                {"key": ".".join(map(str, first["loc"])), "problem": _text(first)},
            ) from None
        return {"type": kind, "options": options.model_dump(exclude_none=True)}

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_sampler_json_schema)


class ResourcesSetting(Record):
    """Per-trial resources; ``concurrent`` caps trials at once (None: as many as fit)."""

    cpu: PosFloat = 1.0
    gpu: Annotated[float, Strict(), Field(ge=0)] = 0.0
    concurrent: PosInt | None = None

    @field_validator("gpu")
    @classmethod
    def _whole_gpus(cls, gpu: float) -> float:
        if gpu > 1 and not float(gpu).is_integer():
            raise PydanticCustomError(
                "gpu", "more than one GPU must be a whole number, got {gpu}", {"gpu": gpu}
            )
        return gpu


def _or_a_name(names: tuple[str, ...]) -> Any:
    def extra(schema: dict[str, Any]) -> None:
        mapping = dict(schema)
        schema.clear()
        schema.update(anyOf=[{"type": "string", "enum": list(names)}, mapping])

    return extra


class SchedulerSetting(Record):
    """``none``, stock ASHA on accuracy, or MO-ASHA on the study's objectives."""

    model_config = ConfigDict(json_schema_extra=_or_a_name(SCHEDULERS))

    type: Annotated[str, OneOf(SCHEDULERS)] = "none"
    grace_epochs: PosInt = 1
    reduction_factor: Annotated[float, Strict(), Field(gt=1)] = 3.0
    max_epochs: PosInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return {"type": value or "none"}
        if isinstance(value, dict) and value.get("type", "none") == "none" and len(value) > 1:
            raise PydanticCustomError(
                "scheduler", "grace_epochs, reduction_factor and max_epochs need type: asha or moasha", {}
            )
        return value


def _limit(metric: str) -> Any:
    unit = METRICS.get(metric).unit

    def read(value: Any) -> float:
        try:
            return parse(value, unit)
        except ValueError as exc:
            raise PydanticCustomError("unit", "{problem}", {"problem": str(exc)}) from None

    schema = {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}
    if unit in ("bytes", "ms"):
        schema = {"type": "string", "description": f"a {unit} value with its unit"}
    return (Annotated[float, BeforeValidator(read), Field(gt=0), WithJsonSchema(schema)] | None, None)


class _BudgetBase(Record):
    @model_validator(mode="before")
    @classmethod
    def _budgetable(cls, data: Any) -> Any:
        for key in data if isinstance(data, dict) else ():
            if key in METRICS and key not in budget_metrics():
                raise PydanticCustomError(
                    "unknown_key",
                    "{metric} is known only after training, so it cannot be budgeted (a budget limits {allowed})",
                    {"key": key, "metric": key, "allowed": ", ".join(budget_metrics())},
                )
        return data


Budget = create_model("Budget", __base__=_BudgetBase, **{m: _limit(m) for m in budget_metrics()})


class SpaceDocument(Record):
    """A space file (or a trainer config: a space with every value fixed)."""

    name: Annotated[str, Strict(), Field(pattern=NAME_PATTERN)] | None = None
    description: Annotated[str, Strict()] | None = None
    storage: Annotated[str, Strict(), Field(min_length=1)] | None = None
    #: Folder for the study's files (trained trials' weights); default beside an SQLite study file.
    artifacts: Annotated[str, Strict(), Field(min_length=1)] | None = None
    trials: PosInt = 20
    seed: NonNegInt = 0
    sampler: SamplerSetting = SamplerSetting()
    objectives: Annotated[list[Annotated[str, OneOf(METRICS)]], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_OBJECTIVES)
    )
    budget: Budget = Budget()  # type: ignore[valid-type]
    resources: ResourcesSetting = ResourcesSetting()
    scheduler: SchedulerSetting = SchedulerSetting()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    space: SearchTree = SearchTree()  # type: ignore[valid-type]
    deploy: DeployConfig = DeployConfig()
    provenance: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _objectives_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("objectives"), str):
            return {**data, "objectives": [data["objectives"]]}
        return data


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a space file, for editors (``# yaml-language-server: $schema=``)."""
    schema = SpaceDocument.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://sdsearch.dev/schema/space.json",
        "title": "sdsearch space file",
        "description": "A search space over self-distilled CNNs, or a trainer config (every value fixed).",
        **schema,
    }


# --------------------------------------------------------------------------------------------------
# Errors in our words.


def error_message(exc: ValidationError) -> tuple[str, str]:
    """``(key path, message)`` of the first error, e.g. ``("space.fusion.type", "'x' is not one of ...")``."""
    error = exc.errors()[0]
    return _path(error), _text(error)


def _path(error: Any) -> str:
    ctx = error.get("ctx") or {}
    parts: list[str] = []
    for part in error["loc"]:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif not str(part).startswith(_TAG):
            parts.append(str(part))
    if "key" in ctx:
        parts.append(str(ctx["key"]))
    if error["type"] == "union_tag_invalid":
        parts.append(str(ctx.get("tag", "")).lstrip(_TAG))
    return ".".join(parts)


def _text(error: Any) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    got = describe(value)
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag", "")).lstrip(_TAG)
        fits = [t.strip("' ").lstrip(_TAG) for t in str(ctx.get("expected_tags", "")).split(",")]
        fits = [f for f in fits if f not in ("fixed", "malformed")]
        what = "a choice" if tag == "choice" else "a subset" if tag == "subset" else f"a {tag} range"
        return f"{what} does not fit this key (use {' or '.join(fits) or 'a value'})"
    if kind == "too_short" and ctx.get("min_length") == 2 and ctx.get("max_length", 2) == 2:
        return f"expected [low, high], got {value!r}"
    messages = {
        "int_type": f"expected an integer, got {got}",
        "float_type": f"expected a number, got {got}",
        "bool_type": f"expected true or false, got {got}",
        "string_type": f"expected text, got {got}",
        "list_type": f"expected a list, got {got}",
        "tuple_type": f"expected a list, got {got}",
        "dict_type": f"expected a mapping, got {got}",
        "model_type": f"expected a mapping, got {got}",
        "finite_number": f"expected a finite number, got {value!r}",
        "greater_than": f"must be > {_g(ctx.get('gt'))}, got {value!r}",
        "greater_than_equal": f"must be >= {_g(ctx.get('ge'))}, got {value!r}",
        "less_than": f"must be < {_g(ctx.get('lt'))}, got {value!r}",
        "less_than_equal": f"must be <= {_g(ctx.get('le'))}, got {value!r}",
        "too_short": f"expected a non-empty list of values, got {value!r}"
        if ctx.get("min_length") == 1
        else f"expected at least {ctx.get('min_length')} items, got {value!r}",
        "too_long": f"expected [low, high], got {value!r}"
        if ctx.get("max_length") == 2
        else f"expected at most {ctx.get('max_length')} items, got {value!r}",
        "string_pattern_mismatch": f"{value!r} is not a valid study name (letters, digits, _ . - only)",
        "string_too_short": f"expected text, got {value!r}",
        "missing": "is required",
    }
    if kind == "mapping":
        return f"expected a mapping of {ctx.get('allowed')}, got {describe(ctx.get('input', value))}"
    return messages.get(kind) or re.sub(r"^Value error, ", "", error["msg"])


def _g(number: Any) -> str:
    return f"{number:g}" if isinstance(number, (int, float)) else str(number)


def describe(value: Any) -> str:
    """A value as messages name it: ``a mapping``, ``text 'x'``, ``float 0.5``."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"text {value!r}", bool: f"{value}".lower()}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )

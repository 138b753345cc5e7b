"""Registries: the one list of names each kind of pluggable component may take.

Validation, the builders and every error message ask the same registry, so a backbone added with
:func:`sdsearch.nn.backbones.register_backbone` (or installed as a plugin) is accepted by
``sdsearch validate`` exactly where it can be built (the lesson of timm's ``_model_entrypoints``:
a registry that validation does not consult is decoration).

Built-in entries name their implementation lazily, as ``"module:attribute"`` strings, so this module
and the validator import no torch: ``sdsearch validate`` and ``--help`` start instantly. A registry
may also accept

- *import strings* (``"package.module:factory"``, for a user's own backbone with no change to
  sdsearch), resolved when first used, and
- *entry points* of an installed distribution (group ``sdsearch.backbones``), listed lazily.

Example:
    >>> BACKBONES.names()[:2]
    ['resnet', 'mobilenetv2']
    >>> BACKBONES.problem("resnt")
    "'resnt' is not one of resnet, mobilenetv2; did you mean resnet?"
"""

from __future__ import annotations

import difflib
import importlib
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "BACKBONES",
    "BRANCH_STYLES",
    "DATASETS",
    "ELASTIC_WIDTH_ATTR",
    "FUSIONS",
    "SAMPLERS",
    "DatasetSpec",
    "Registry",
    "SamplerSpec",
    "can_slice",
    "cannot_slice",
    "did_you_mean",
    "resolve",
]

T = TypeVar("T")

#: ``package.module:attribute`` (dotted on both sides).
IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def did_you_mean(word: str, options: Iterator[str] | list[str] | tuple[str, ...]) -> str:
    """``"; did you mean X?"`` for the closest option, or ``""``."""
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def resolve(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute.

    Raises:
        ImportError: the module cannot be imported or has no such attribute (the message says which).
    """
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


class Registry(Generic[T]):
    """Name -> entry for one kind of component; the only place its names are listed.

    An entry is either the object itself or a lazy ``"module:attribute"`` string resolved on first
    :meth:`get`. Registering a name again warns and replaces it (as timm's registry does).

    Args:
        kind: what the names are, for messages (``"backbone"``).
        entries: the built-in entries, in the order messages list them.
        entry_points: an ``importlib.metadata`` entry-point group whose names join the registry.
        import_strings: also accept ``"package.module:attribute"`` names, resolved on use.
    """

    def __init__(
        self,
        kind: str,
        entries: Mapping[str, T | str] | None = None,
        *,
        entry_points: str | None = None,
        import_strings: bool = False,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries or {})
        self._builtin = frozenset(self._entries)
        self._entry_point_group = entry_points
        self._entry_points: dict[str, Any] | None = None
        self.import_strings = import_strings

    @property
    def entry_point_group(self) -> str | None:
        """The entry-point group whose plugins join this registry (``sdsearch.backbones``), if any."""
        return self._entry_point_group

    # -- names -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered names (built-ins first, then runtime registrations, then plugins)."""
        return [*self._entries, *(n for n in self._plugins() if n not in self._entries)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._entries or name in self._plugins() or self.is_import_string(name)

    def is_import_string(self, name: str) -> bool:
        """Whether ``name`` is a ``module:attribute`` reference this registry accepts."""
        return self.import_strings and bool(IMPORT_STRING.match(name))

    def problem(self, name: object) -> str | None:
        """Why ``name`` cannot be used (not registered, or an import string that does not import)."""
        if not isinstance(name, str) or name not in self:
            names = self.names()
            extra = " or a package.module:factory import string" if self.import_strings else ""
            return f"{name!r} is not one of {', '.join(names)}{extra}{did_you_mean(str(name), names)}"
        if self.is_import_string(name) and name not in self._entries:
            try:
                resolve(name)
            except Exception as exc:  # the user's module may raise anything while importing
                return f"cannot import {name!r} ({type(exc).__name__}: {exc}); is its package on the Python path?"
        return None

    # -- entries ---------------------------------------------------------------------------------
    def register(self, name: str, entry: T) -> T:
        """File ``entry`` under ``name``; a second registration of a name warns and wins."""
        current = self._entries.get(name)
        if current is not None and current is not entry and not isinstance(current, str):
            warnings.warn(
                f"{self.kind} {name!r} is registered again; the new one replaces the old", stacklevel=3
            )
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget a name registered at run time (built-in entries stay)."""
        if name not in self._builtin:
            self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry for ``name`` (lazy strings and import strings resolved, plugins loaded).

        Raises:
            KeyError: ``name`` is not registered; the message lists the names.
        """
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, str) and IMPORT_STRING.match(entry):
                entry = self._entries[name] = resolve(entry)
            return entry
        plugins = self._plugins()
        if name in plugins:
            entry = self._entries[name] = plugins[name].load()
            return entry
        if self.is_import_string(name):
            return resolve(name)
        raise KeyError(self.problem(name))

    def builtin_names(self) -> list[str]:
        """The registry's built-in names (sdsearch's own), sorted."""
        return sorted(self._builtin)

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of the registry's built-in entries (sdsearch's own)."""
        return name in self._builtin

    def registered(self) -> dict[str, Any]:
        """Entries registered at run time (not built in, not plugins): what Ray workers must be sent."""
        return {n: e for n, e in self._entries.items() if not isinstance(e, str) and n not in self._builtin}

    def _plugins(self) -> dict[str, Any]:
        if self._entry_point_group is None:
            return {}
        if self._entry_points is None:
            from importlib.metadata import entry_points

            self._entry_points = {ep.name: ep for ep in entry_points(group=self._entry_point_group)}
        return self._entry_points

    def refresh(self) -> None:
        """Forget the cached plugin list (after installing a plugin in a running process)."""
        self._entry_points = None


# -------------------------------------------------------------------------------------------------
# The registries. Implementations live in sdsearch.nn and sdsearch.data.sources; only their names are here.

#: Backbone factories ``(*, in_chans, width, depth, **options) -> nn.Module`` (see nn/backbones.py).
BACKBONES: Registry[Callable[..., Any]] = Registry(
    "backbone",
    {"resnet": "sdsearch.nn.backbones:resnet", "mobilenetv2": "sdsearch.nn.backbones:mobilenetv2"},
    entry_points="sdsearch.backbones",
    import_strings=True,
)
#: The attribute a backbone factory sets to True when its channels at a smaller width are the leading
#: channels at a larger one, layer by layer, so it can be trained as an elastic (slimmable) network.
ELASTIC_WIDTH_ATTR = "elastic_width"


def cannot_slice(arch: str) -> str:
    """The message for an elastic network of a backbone :func:`can_slice` refuses: what to do instead."""
    builtins = " or ".join(BACKBONES.builtin_names())
    return (
        f"backbone {arch!r} cannot run at narrower widths as slices of its widest weights; use {builtins}, "
        f"or give its factory `{ELASTIC_WIDTH_ATTR} = True` if its narrower channels are the leading ones "
        "of its wider ones"
    )


def can_slice(arch: str) -> bool:
    """Whether backbone ``arch`` can run at narrower widths as leading slices of its widest weights:
    the built-in backbones can; a user's factory says so with :data:`ELASTIC_WIDTH_ATTR`."""
    if BACKBONES.is_builtin(arch):
        return True
    try:
        return bool(getattr(BACKBONES.get(arch), ELASTIC_WIDTH_ATTR, False))
    except (KeyError, ImportError):
        return False


#: Exit-branch classes ``(in_chs, in_size, out_chs, out_size, *, cbfe_ratio, device, dtype)``.
BRANCH_STYLES: Registry[type] = Registry(
    "branch style", {"sd": "sdsearch.nn.blocks:SDBranch", "lite": "sdsearch.nn.blocks:LiteBranch"}
)
#: Fusion classes ``(channels, num_inputs, num_classes, map_size, *, device, dtype)``; ``none`` is no fusion.
FUSIONS: Registry[type | None] = Registry(
    "fusion type",
    {
        "none": None,
        "channel_attention": "sdsearch.nn.fusion:ChannelAttentionFusion",
        "spatial_mask_avg": "sdsearch.nn.fusion:SpatialMaskAvgFusion",
        "residual": "sdsearch.nn.fusion:ResidualFusion",
    },
)


@dataclass(frozen=True)
class DatasetSpec:
    """What sdsearch knows about a dataset before reading it.

    Attributes:
        loader: ``"module:function"`` of a :class:`~sdsearch.core.config.DataConfig`, returning
            ``(x_train, y_train, x_test, y_test, classes)`` (uint8 NCHW images, int64 labels).
        shape: ``(in_chans, height, width, num_classes)`` when fixed, else ``describe``:
            ``"module:function"`` of a DataConfig returning a DataShape cheaply (headers only).
        flips: whether ``augment: auto`` mirrors images (not for digits and house numbers).
        requires: ``data`` keys that must be set, each with the help shown when it is missing.
    """

    loader: str
    shape: tuple[int, int, int, int] | None = None
    describe: str | None = None
    flips: bool = True
    requires: Mapping[str, str] = field(default_factory=dict)


_TORCHVISION = "sdsearch.data.sources:load_torchvision"
DATASETS: Registry[DatasetSpec] = Registry(
    "dataset",
    {
        "digits": DatasetSpec("sdsearch.data.sources:load_digits", (1, 8, 8, 10), flips=False),
        "cifar10": DatasetSpec(_TORCHVISION, (3, 32, 32, 10)),
        "cifar100": DatasetSpec(_TORCHVISION, (3, 32, 32, 100)),
        "mnist": DatasetSpec(_TORCHVISION, (1, 28, 28, 10), flips=False),
        "fashion_mnist": DatasetSpec(_TORCHVISION, (1, 28, 28, 10)),
        "svhn": DatasetSpec(_TORCHVISION, (3, 32, 32, 10), flips=False),
        "imagefolder": DatasetSpec(
            "sdsearch.data.sources:load_imagefolder",
            describe="sdsearch.data.sources:describe_imagefolder",
            requires={"root": "dataset imagefolder needs root: DIR with train/ and test/ class folders"},
        ),
        "npz": DatasetSpec(
            "sdsearch.data.sources:load_npz",
            describe="sdsearch.data.sources:describe_npz",
            requires={"path": "dataset npz needs path: FILE.npz (x_train, y_train, x_test, y_test)"},
        ),
    },
)


@dataclass(frozen=True)
class SamplerSpec:
    """An Optuna sampler: its class in ``optuna.samplers`` and the YAML options it accepts (name -> type)."""

    cls: str
    options: Mapping[str, str] = field(default_factory=dict)


_GENETIC = {
    "population_size": "count2",
    "mutation_prob": "prob",
    "crossover_prob": "prob",
    "swapping_prob": "prob",
}
#: Option types: ``count`` an int >= 0, ``count1`` >= 1, ``count2`` >= 2, ``prob`` a float in [0, 1],
#: ``flag`` true/false, ``text`` a string.
SAMPLERS: Registry[SamplerSpec] = Registry(
    "sampler",
    {
        "tpe": SamplerSpec(
            "TPESampler",
            {
                "n_startup_trials": "count",
                "n_ei_candidates": "count1",
                "multivariate": "flag",
                "group": "flag",
                "constant_liar": "flag",
                "consider_endpoints": "flag",
            },
        ),
        "nsga2": SamplerSpec("NSGAIISampler", _GENETIC),
        "nsga3": SamplerSpec("NSGAIIISampler", {**_GENETIC, "dividing_parameter": "count1"}),
        "gp": SamplerSpec("GPSampler", {"n_startup_trials": "count", "deterministic_objective": "flag"}),
        "random": SamplerSpec("RandomSampler"),
        "qmc": SamplerSpec("QMCSampler", {"qmc_type": "text", "scramble": "flag"}),
    },
)

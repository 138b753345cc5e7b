"""Fully fixed configurations: what one trial (or one ``sdsearch train``) builds and trains.

A :class:`TrialConfig` is the resolved form of a space with every distribution replaced by a value.
These are plain frozen records (like Optuna's ``FrozenTrial``): no torch, no ray, cheap to pickle and
to send to Ray workers. YAML key names live here and in :mod:`sdsearch.space` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ARCHS",
    "AUGMENTS",
    "BRANCH_STYLES",
    "CBFE_LOCATIONS",
    "DATASETS",
    "EXIT_NAMES",
    "FUSION_TYPES",
    "LOSS_STYLES",
    "OPTIMIZERS",
    "SCHEDULES",
    "TEACHERS",
    "BackboneConfig",
    "BranchesConfig",
    "CBFEConfig",
    "DataConfig",
    "FusionConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "TrialConfig",
    "exit_names",
]

ARCHS = ("resnet", "mobilenetv2")
BRANCH_STYLES = ("sd", "lite")
CBFE_LOCATIONS = ("none", "branch", "trunk")
FUSION_TYPES = ("none", "channel_attention", "spatial_mask_avg", "residual")
TEACHERS = ("deepest", "fused", "ensemble")
LOSS_STYLES = ("byot", "sd")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTS = ("auto", "none", "crop", "crop_flip")
DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "imagefolder", "npz")
#: Exits may follow stages 1-3; the final exit follows stage 4.
EXIT_NAMES = ("1", "2", "3", "final")


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone family and size: ``width`` scales channels, ``depth`` is blocks per stage."""

    arch: str = "resnet"
    width: float = 1.0
    depth: int = 2


@dataclass(frozen=True)
class BranchesConfig:
    """Shallow exits: ``placement`` lists the stages (1-3) followed by an exit branch."""

    placement: tuple[int, ...] = (1, 2, 3)
    style: str = "sd"


@dataclass(frozen=True)
class CBFEConfig:
    """Channel-based feature enhancement (Zheng et al. 2025); ``ratio`` is the reduction r."""

    location: str = "none"
    ratio: int = 4


@dataclass(frozen=True)
class FusionConfig:
    """How branch maps and the deepest map are fused into an extra training-time head."""

    type: str = "none"


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the architecture (data decides in_chans, classes, input size)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    branches: BranchesConfig = field(default_factory=BranchesConfig)
    cbfe: CBFEConfig = field(default_factory=CBFEConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    @property
    def exits(self) -> tuple[str, ...]:
        """Exit names in depth order, the final exit last."""
        return exit_names(self.branches.placement)


@dataclass(frozen=True)
class LossConfig:
    """Self-distillation loss weights; defaults are the BYOT/SD reproduction setting."""

    teacher: str = "deepest"
    kd_weight: float = 0.3
    temperature: float = 3.0
    feature_weight: float = 0.03
    ce_weight: float = 1.0
    style: str = "byot"


@dataclass(frozen=True)
class DataConfig:
    """Dataset and the seeded, stratified validation split carved from its training part."""

    dataset: str = "digits"
    val_fraction: float = 0.2
    root: str | None = None
    download: bool = False
    path: str | None = None
    augment: str = "auto"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; ``milestones`` are fractions of ``epochs`` for ``schedule: step``."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5.0e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    amp: bool = True
    channels_last: bool = True


@dataclass(frozen=True)
class TrialConfig:
    """One fully fixed configuration: model, loss, data, training and the exit to deploy.

    ``deploy_exit`` is one of ``model.exits``; its accuracy, params and MACs are the trial's
    objective values. ``seed`` seeds weights, augmentation and batch order.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deploy_exit: str = "final"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists instead of tuples): JSON/YAML friendly and stable."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        return _build(cls, d)

    def replace(self, **changes: Any) -> TrialConfig:
        """A copy with top-level fields replaced (``train=...``, ``deploy_exit=...``)."""
        return dataclasses.replace(self, **changes)


def exit_names(placement: tuple[int, ...] | list[int]) -> tuple[str, ...]:
    """Exit names for a branch placement, in depth order: ``(1, 3)`` -> ``("1", "3", "final")``."""
    return (*(str(s) for s in sorted(set(placement))), "final")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, d: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in d.items():
        if name not in hints:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
        default = (
            hints[name].default_factory()
            if hints[name].default_factory is not dataclasses.MISSING
            else hints[name].default
        )  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _build(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)

"""The cost of a model that runs every exit: an anytime deployment's worst case, what its budget bounds.

Counted on the meta device like any deploy model (:mod:`sdsearch.cost.trace`): params, worst-case
MACs, peak memory (each stage's map stays live while its exit's branch runs, since the trunk goes on
from it; at int8 TFLite Micro's arena for a graph with one output per exit) and size, of
:class:`~sdsearch.nn.network.AllExitsModel`.

Example:
    >>> every_exit_cost(ModelConfig(), num_classes=10, in_chans=1, input_size=(8, 8)).macs  # doctest: +SKIP
"""

from __future__ import annotations

import functools

from sdsearch.core.config import ModelConfig
from sdsearch.core.platforms import DEFAULT_PLATFORM
from sdsearch.cost.trace import Cost, FastMetaMode, module_cost
from sdsearch.nn.network import AllExitsModel, SelfDistillNet

__all__ = ["every_exit_cost"]


def every_exit_cost(
    config: ModelConfig,
    *,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str = "int8",
    platform: str = DEFAULT_PLATFORM,
) -> Cost:
    """The :class:`~sdsearch.cost.trace.Cost` of ``config`` deployed with every exit running."""
    return _every_exit_cost(config, num_classes, in_chans, tuple(input_size), dtype, platform)


@functools.lru_cache(maxsize=256)
def _every_exit_cost(
    config: ModelConfig,
    num_classes: int,
    in_chans: int,
    input_size: tuple[int, int],
    dtype: str,
    platform: str,
) -> Cost:
    with FastMetaMode():  # init ops are slow on meta and pointless there
        net = SelfDistillNet(
            config, num_classes=num_classes, in_chans=in_chans, input_size=input_size, device="meta"
        )
    model = AllExitsModel(net, share_weights=True)
    return module_cost(model, (in_chans, *input_size), dtype=dtype, platform=platform)

"""The TFLite Micro estimate: the greedy planner by hand, the lowering's ops, and agreement with TFLM itself."""

from __future__ import annotations

import pytest

from sdsearch.core.config import BackboneConfig, BranchesConfig, CBFEConfig, ModelConfig
from sdsearch.core.platforms import PLATFORMS
from sdsearch.cost.tflm import TflmGraph, _planned
from sdsearch.cost.trace import exit_costs
from sdsearch.data.datasets import DataShape

REFERENCE = PLATFORMS["tflm-reference"]


def _chain(sizes: list[int]) -> TflmGraph:
    """Input of ``sizes[0]`` bytes, then one op per further size, each reading the previous tensor."""
    graph = TflmGraph()
    previous = graph.tensor(sizes[0])
    for size in sizes[1:]:
        previous = graph.emit("CONV_2D", [previous], size, [])
    graph.outputs = [previous]
    return graph


def test_planner_overlaps_a_chain_to_its_largest_neighbouring_pair() -> None:
    # 160 -> 320 -> 48 -> 16 bytes: op 1 holds 160 + 320, op 2 320 + 48; sizes are 16-byte aligned.
    assert _planned(_chain([160, 320, 48, 16]), REFERENCE) == 160 + 320
    assert _planned(_chain([150, 300, 40]), REFERENCE) == 160 + 304  # 150 -> 160, 300 -> 304


def test_planner_keeps_a_skip_live_and_breaks_ties_as_tflm_does() -> None:
    # x (64) feeds op 1 and the add (op 3): x, a, b are live together at op 2 and op 3.
    graph = TflmGraph()
    x = graph.tensor(64)
    a = graph.emit("CONV_2D", [x], 64, [])
    b = graph.emit("CONV_2D", [a], 64, [])
    graph.outputs = [graph.emit("ADD", [b, x], 64, [])]
    assert _planned(graph, REFERENCE) == 3 * 64


def test_planner_places_equal_sizes_last_added_first() -> None:
    # TFLM fills its sort array from the back, so among equal sizes the last added is placed first.
    # t0 (32 B, live 0-2) -> t1 (16, 1-2); t2 (16, 2-3) reads t1 and t0; t3 (32, 3-4); t4 (48, 4-5);
    # t5 (32, 5). Largest first: t4 at 0; the 32s last-added first: t5 at 48, t3 at 48 (t5 is not live
    # with it), t0 at 0; the 16s: t2 in the gap 32-48 between t0 and t3, t1 at 48. Peak 80 bytes.
    # Ties first-added first would put t2 above t3: 96.
    graph = TflmGraph()
    t0 = graph.tensor(32)
    t1 = graph.emit("CONV_2D", [t0], 16, [])
    t2 = graph.emit("ADD", [t1, t0], 16, [])
    t3 = graph.emit("CONV_2D", [t2], 32, [])
    t4 = graph.emit("CONV_2D", [t3], 48, [])
    graph.outputs = [graph.emit("CONV_2D", [t4], 32, [])]
    assert _planned(graph, REFERENCE) == 80


def test_planner_counts_kernel_scratch_for_its_op_only() -> None:
    graph = _chain([32, 32])
    graph.ops[0].scratch.append(100)  # live during op 1 only: 32 + 32 + 112
    assert _planned(graph, REFERENCE) == 32 + 32 + 112


def _ops(config: ModelConfig, shape: tuple[int, int, int], exit_name: str = "final") -> dict[str, int]:
    cost = exit_costs(config, num_classes=10, in_chans=shape[0], input_size=shape[1:])[exit_name]
    assert cost.tflm is not None
    return cost.tflm.ops


def test_lowering_pads_where_pytorch_padding_is_not_same() -> None:
    config = ModelConfig(
        backbone=BackboneConfig(arch="resnet", width=0.25, depth=1), branches=BranchesConfig(placement=())
    )
    # 8x8: each stride-2 3x3 conv pads (1, 1) where TFLite's SAME pads (0, 1): three PADs; a 1-channel
    # stem conv is a depthwise conv; the input's normalisation is one MUL and one ADD.
    even = _ops(config, (1, 8, 8))
    assert even["PAD"] == 3 and even["DEPTHWISE_CONV_2D"] == 1 and even["MUL"] == 1
    # 9x9 (then 5x5, 3x3): (9 + 2 - 3) // 2 + 1 = 5 = ceil(9 / 2), SAME pads (1, 1): no PAD; 3 channels: CONV_2D.
    odd = _ops(config, (3, 9, 9))
    assert "PAD" not in odd and "DEPTHWISE_CONV_2D" not in odd


def test_int8_figures_depend_on_the_platform() -> None:
    config = ModelConfig(backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=1))
    kw = {"num_classes": 10, "in_chans": 1, "input_size": (8, 8)}
    cortex, reference = (
        exit_costs(config, platform=p, **kw)["final"] for p in ("cortex-m", "tflm-reference")
    )
    # Half-size pointers shrink the persistent structs; CMSIS-NN's im2col buffers add to the plan.
    assert cortex.tflm.arena_persistent_bytes < reference.tflm.arena_persistent_bytes
    assert cortex.tflm.arena_planned_bytes >= reference.tflm.arena_planned_bytes
    assert cortex.size == reference.size  # one file


#: Measured once with the pinned tflite-micro and litert-torch (``sdsearch cost CONFIG --tflm``):
#: (arch, arena bytes, .tflite bytes) of width 0.25, depth 1, the final exit, 1x8x8 input, 10 classes.
MEASURED_ONCE = [("resnet", 15216, 334480), ("mobilenetv2", 27136, 101520)]


@pytest.mark.parametrize(("arch", "arena", "file_bytes"), MEASURED_ONCE)
def test_estimate_matches_figures_tflite_micro_measured(arch: str, arena: int, file_bytes: int) -> None:
    """Without the extra too: the estimate of two small models against what TFLite Micro measured."""
    config = ModelConfig(backbone=BackboneConfig(arch=arch, width=0.25, depth=1))
    cost = exit_costs(config, num_classes=10, in_chans=1, input_size=(8, 8), platform="tflm-reference")[
        "final"
    ]
    assert abs(cost.peak_memory / arena - 1) <= 0.02 and abs(cost.size / file_bytes - 1) <= 0.02


# -- against TFLite Micro (the mcu extra) --------------------------------------------------------------------

#: Small configs of both backbones, CBFE on the trunk and on a branch, one conversion each.
MEASURED = {
    "resnet-trunk-cbfe": (ModelConfig(backbone=BackboneConfig(arch="resnet", width=0.125, depth=1),
                                      cbfe=CBFEConfig(location="trunk", ratio=4)), (1, 8, 8), "final"),
    "mobilenetv2-exit1": (ModelConfig(backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=2),
                                      branches=BranchesConfig(placement=(1,), style="lite"),
                                      cbfe=CBFEConfig(location="branch", ratio=2)), (3, 16, 16), "1"),
}  # fmt: skip


@pytest.fixture(scope="session")
def measured_checks():
    pytest.importorskip("litert_torch")
    pytest.importorskip("tflite_micro")
    from sdsearch.cost.tflm_check import check_exits

    return {
        name: check_exits(config, DataShape(*shape, 10), exits=[exit_name])[exit_name]
        for name, (config, shape, exit_name) in MEASURED.items()
    }


@pytest.mark.parametrize("name", list(MEASURED))
def test_estimate_is_within_ten_percent_of_tflite_micro(measured_checks, name) -> None:
    check = measured_checks[name]
    assert check.estimate.ops == check.measured.ops  # the lowering emits the converter's ops
    for figure in ("arena_bytes", "model_bytes"):
        assert abs(check.ratio(figure) - 1) <= 0.10, (figure, check.estimate, check.measured)
    # The planned head is the planner replayed on the same graph: exact.
    assert check.estimate.arena_planned_bytes == check.measured.arena_planned_bytes


def test_an_in_place_relu_fuses_like_an_out_of_place_one() -> None:
    from torch import nn

    from sdsearch.cost.trace import module_cost

    def chain(inplace: bool) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(8, 8, 3, padding=1)
        )

    in_place, plain = (
        module_cost(chain(flag), (3, 8, 8), platform="tflm-reference") for flag in (True, False)
    )
    assert in_place.tflm.ops == plain.tflm.ops == {"MUL": 1, "ADD": 1, "CONV_2D": 2}
    assert (in_place.peak_memory, in_place.size) == (plain.peak_memory, plain.size)

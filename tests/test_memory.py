"""The liveness count of activations (``peak_memory`` at float32, 4 bytes an element) and sizes:
hand-computed cases, folding rules, bounds, dtypes. At int8 both are TFLite Micro's figures
(tests/test_tflm_estimate.py).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from sdsearch.core.config import BackboneConfig, BranchesConfig, ModelConfig
from sdsearch.core.errors import ConfigError
from sdsearch.core.units import DTYPE_BYTES, DTYPES
from sdsearch.cost.trace import Cost, deploy_cost, exit_costs, module_cost
from sdsearch.nn.backbones import BasicBlock
from sdsearch.nn.blocks import CBFE
from sdsearch.nn.network import SelfDistillNet


def _live(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Peak live activation elements: the float32 peak memory over 4 bytes."""
    return module_cost(model, shape, dtype="float32").peak_memory // 4


def _conv(i: int, o: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride, padding=1, bias=bias)


def test_plain_conv_chain_peak_is_the_largest_input_plus_output() -> None:
    chain = nn.Sequential(_conv(1, 8), _conv(8, 16, stride=2), _conv(16, 4))
    # 1x12x12 -> 8x12x12 -> 16x6x6 -> 4x6x6: only a layer's input and output are live at a time.
    maps = [1 * 144, 8 * 144, 16 * 36, 4 * 36]
    expected = max(a + b for a, b in itertools.pairwise(maps))
    assert expected == 8 * 144 + 16 * 36  # the stride-2 layer
    assert _live(chain, (1, 12, 12)) == expected


def test_residual_block_keeps_its_skip_tensor_live() -> None:
    c, hw = 8, 36  # 8x6x6
    # conv1+bn1+relu, conv2+bn2, add, relu: while conv2 runs, x (the skip), conv1's and conv2's
    # outputs are live; a chain of the same convs would need only two of the three.
    assert _live(BasicBlock(c, c), (c, 6, 6)) == 3 * c * hw
    # With a 1x1 stride-2 projection (8x8x8 -> 16x4x4): while conv1 runs, x (512), the projected
    # shortcut (256) and conv1's output (256) are live.
    assert _live(BasicBlock(8, 16, stride=2), (8, 8, 8)) == 512 + 256 + 256


def test_attention_gate_input_stays_live_while_the_gate_runs() -> None:
    # CBFE: x * sigmoid(bn2(fc2(relu(bn1(fc1(x)))))) on 8x4x4 (128 elements each, rd = 8 channels).
    # While fc2 runs: x, fc1's output and fc2's output; then x, fc2's output and the sigmoid's.
    assert _live(CBFE(8, 2), (8, 4, 4)) == 3 * 128


def test_bn_folds_and_activations_fuse_into_their_producer() -> None:
    plain = nn.Sequential(_conv(3, 8, bias=False), _conv(8, 8, bias=False))
    folded = nn.Sequential(
        _conv(3, 8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        _conv(8, 8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
    )
    in_place = nn.Sequential(_conv(3, 8, bias=False), nn.ReLU(inplace=True), _conv(8, 8, bias=False))
    shape = (3, 8, 8)
    expected = (8 + 8) * 64
    for model in (plain, folded, in_place):
        assert _live(model, shape) == expected


def test_a_bn_that_cannot_fold_is_a_buffer() -> None:
    # BN after a ReLU (SDAttention's pattern) does not fold: the ReLU fuses into the conv, the BN
    # writes a new buffer.
    model = nn.Sequential(_conv(3, 8, bias=False), nn.ReLU(), nn.BatchNorm2d(8), nn.ReLU())
    assert _live(model, (3, 8, 8)) == (8 + 8) * 64  # at the BN: the conv's output and its own
    assert _live(model, (3, 8, 8)) > _live(nn.Sequential(_conv(3, 8, bias=False), nn.ReLU()), (3, 8, 8))


class _TwoConsumers(nn.Module):
    """The conv's output feeds the BN and the add: folding would overwrite the add's input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_output_with_two_consumers_keeps_its_bn_apart() -> None:
    # 16 elements per map. At the BN: x (read by nobody later) is dead; y and bn(y) are live. At the
    # add: y, bn(y), sum.
    assert _live(_TwoConsumers(), (4, 2, 2)) == 3 * 16


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = _conv(4, 4), _conv(4, 4), _conv(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"early": self.c1(x), "late": self.c3(self.c2(x))}


def test_every_output_stays_live_to_the_end() -> None:
    # 64 elements per map. "early" is read by no op but is returned, so it is live to the end:
    # while c3 runs, early, c2's output and c3's output are live.
    assert _live(_TwoOutputs(), (4, 4, 4)) == 3 * 64


def test_int8_and_float32_conventions_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    int8, fp32 = (module_cost(model, (2, 4, 4), dtype=d) for d in ("int8", "float32"))
    assert int8.dtype == "int8" and fp32.dtype == "float32"
    assert fp32.peak_memory == 4 * (32 + 64)
    # int8: TFLite Micro's arena and the .tflite's bytes, more than the weights alone.
    assert int8.tflm is not None and fp32.tflm is None
    assert int8.peak_memory == int8.tflm.arena_bytes > 32 + 64
    assert int8.size == int8.tflm.model_bytes > 72 + 192
    # float32: every parameter, BN's gamma and beta included: 72 + 8 + 192 + 3.
    assert fp32.size == 4 * (72 + 8 + 195) == 4 * fp32.params
    assert (int8.params, int8.macs) == (fp32.params, fp32.macs)


def test_tied_weights_count_once() -> None:
    conv = _conv(4, 4)
    tied = nn.Sequential(conv, nn.ReLU(), conv)  # one conv, used twice
    single = nn.Sequential(conv)
    assert module_cost(tied, (4, 6, 6)).params == module_cost(single, (4, 6, 6)).params == 4 * 36 + 4
    assert module_cost(tied, (4, 6, 6), dtype="float32").size == 4 * (4 * 36 + 4)
    assert module_cost(tied, (4, 6, 6)).macs == 2 * module_cost(single, (4, 6, 6)).macs


def _leaf_maps(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, int, int]]:
    """(module, input elements, output elements) of every leaf module in a real forward pass."""
    seen: list[tuple[nn.Module, int, int]] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].numel(), o.numel())))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_mobilenetv2_deepest_exit_lies_between_its_bounds() -> None:
    config = ModelConfig(
        backbone=BackboneConfig(arch="mobilenetv2", width=0.25, depth=1),
        branches=BranchesConfig(placement=()),
    )
    net = SelfDistillNet(config, num_classes=10, in_chans=3, input_size=(32, 32))
    model = net.deploy("final").eval()
    maps = _leaf_maps(model, torch.zeros(1, 3, 32, 32))
    # Every conv or linear layer holds its input and output at once; no schedule holds more than
    # the input plus every leaf module's output (BN and ReLU outputs share their conv's buffer).
    lower = max(i + o for m, i, o in maps if isinstance(m, (nn.Conv2d, nn.Linear)))
    upper = 3 * 32 * 32 + sum(o for _, _, o in maps)
    cost = deploy_cost(config, "final", num_classes=10, in_chans=3, input_size=(32, 32), dtype="float32")
    assert lower <= cost.peak_memory // 4 <= upper
    # The peak is the second inverted residual of stage 1 at 32x32: its input (8 channels, the
    # skip), the 6x expansion (48 channels) and the depthwise output (48 channels).
    assert cost.peak_memory // 4 == (8 + 48 + 48) * 32 * 32
    assert cost == module_cost(model, (3, 32, 32), dtype="float32")


def test_torchvision_resnet18_in_place_ops_and_dropped_outputs() -> None:
    """In-place ReLU and ``out += identity`` alias; max-pool's indices are never read, so dropped."""
    torchvision = pytest.importorskip("torchvision")
    live = _live(torchvision.models.resnet18(weights=None), (3, 224, 224))
    # The peak is the max-pool: its input (conv1 + bn1 + relu, 64x112x112) and output (64x56x56).
    # The graph input (3x224x224) is dead by then.
    assert live == 64 * 112 * 112 + 64 * 56 * 56


def test_every_exit_scales_by_dtype_from_one_cached_trace() -> None:
    config = ModelConfig(backbone=BackboneConfig(arch="resnet", width=0.25, depth=1))
    kw = {"num_classes": 10, "in_chans": 3, "input_size": (16, 16)}
    costs = {d: exit_costs(config, dtype=d, **kw) for d in DTYPES}
    assert DTYPE_BYTES == {"int8": 1, "float32": 4}
    for e, int8 in costs["int8"].items():
        fp32 = costs["float32"][e]
        assert fp32.peak_memory > 0 and int8.peak_memory > 0
        assert fp32.size == 4 * fp32.params
        assert int8.params < int8.size < fp32.size  # 1 B a weight, plus biases, scales and tables
        assert deploy_cost(config, e, dtype="float32", **kw) == fp32
    # Deeper exits hold the shallow ones' stages, so at float32 no shallow exit is bigger than the
    # final one (at int8 a branch's per-op structs and tables can outweigh a stage).
    finals = costs["float32"]["final"]
    assert all(c.size <= finals.size for c in costs["float32"].values())


def test_unknown_dtype_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"dtype: 'int4' is not one of int8, float32"):
        exit_costs(ModelConfig(), num_classes=10, in_chans=3, input_size=(32, 32), dtype="int4")
    with pytest.raises(ConfigError, match="int4"):
        module_cost(nn.Linear(2, 2), (2,), dtype="int4")
    assert Cost(1, 2, 3, 4).dtype == "int8"

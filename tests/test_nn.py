"""Contract tests of sdsearch.nn: backbones, blocks, fusion, the multi-exit net and deploy()."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from torch import nn

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    FusionConfig,
    ModelConfig,
)
from sdsearch.core.errors import ConfigError
from sdsearch.core.registry import BACKBONES, BRANCH_STYLES, FUSIONS
from sdsearch.cost.trace import exit_costs
from sdsearch.nn.backbones import create_backbone, list_backbones, register_backbone
from sdsearch.nn.blocks import CBFE, LiteBranch, SDBranch, SepConv
from sdsearch.nn.network import SDOutput, SelfDistillNet

# Contract tests run over every registered implementation (as timm's tests do over list_models()).
ARCHS = BACKBONES.names()
STYLES = BRANCH_STYLES.names()
FUSION_TYPES = FUSIONS.names()
CBFE_LOCATIONS = ("none", "branch", "trunk")

SIZE = (16, 16)
NUM_CLASSES = 5


def make_config(
    arch: str = "resnet",
    style: str = "sd",
    fusion: str = "none",
    cbfe: str = "none",
    placement: tuple[int, ...] = (1, 2, 3),
    width: float = 0.25,
    depth: int = 1,
) -> ModelConfig:
    return ModelConfig(
        backbone=BackboneConfig(arch=arch, width=width, depth=depth),
        branches=BranchesConfig(placement=placement, style=style),
        cbfe=CBFEConfig(location=cbfe, ratio=4),
        fusion=FusionConfig(type=fusion),
    )


def make_net(config: ModelConfig, size: tuple[int, int] = SIZE, in_chans: int = 3) -> SelfDistillNet:
    torch.manual_seed(0)
    return SelfDistillNet(config, num_classes=NUM_CLASSES, in_chans=in_chans, input_size=size).eval()


# --- backbones -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(16, 16), (8, 8), (11, 9)])
def test_backbone_feature_info_matches_outputs(arch: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = create_backbone(arch, width=0.25, depth=1, in_chans=1).eval()
    feats = net(torch.randn(2, 1, *size))  # the features_only contract: the 4 stage maps
    info = net.feature_info
    assert len(feats) == len(info) == 4
    for f, chs, red, name in zip(feats, info.channels(), info.reduction(), info.module_name(), strict=True):
        assert f.shape == (2, chs, math.ceil(size[0] / red), math.ceil(size[1] / red))
        assert net.get_submodule(name) is not None
        assert torch.isfinite(f).all()
    assert info.reduction() == [1, 2, 4, 8]


def test_backbone_widths() -> None:
    info = create_backbone("resnet", width=1.0, depth=2, in_chans=3, device="meta").feature_info
    assert info.channels() == [64, 128, 256, 512]
    info = create_backbone("resnet", width=0.25, depth=1, in_chans=3, device="meta").feature_info
    assert info.channels() == [16, 32, 64, 128]
    info = create_backbone("resnet", width=0.05, depth=1, in_chans=3, device="meta").feature_info
    assert min(info.channels()) >= 8
    info = create_backbone("mobilenetv2", width=1.0, depth=1, in_chans=3, device="meta").feature_info
    assert info.channels() == [24, 32, 96, 320]
    # the paper's last 1x1 conv (to 1280·w channels) ends stage 4 when asked for
    info = create_backbone(
        "mobilenetv2", width=0.5, depth=1, in_chans=3, device="meta", last_channel=True
    ).feature_info
    assert info.channels() == [16, 16, 48, 640]


def test_backbone_registry() -> None:
    assert {"resnet", "mobilenetv2"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="resnet, mobilenetv2"):
        create_backbone("vgg", width=1.0, depth=1, in_chans=3)

    def resnet(**kw: object) -> nn.Module:  # same name: replaces the builder, with a warning
        raise AssertionError

    original = BACKBONES.get("resnet")
    try:
        with pytest.warns(UserWarning, match="registered again"):
            register_backbone(resnet)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            BACKBONES.register("resnet", original)


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_net_builds_on_meta(arch: str) -> None:
    for style, fusion, cbfe in [("sd", "residual", "trunk"), ("lite", "spatial_mask_avg", "branch")]:
        config = make_config(arch, style, fusion, cbfe)
        net = SelfDistillNet(config, num_classes=3, device="meta", dtype=torch.float16)
        assert all(p.is_meta and p.dtype == torch.float16 for p in net.parameters())
        assert all(b.is_meta for b in net.buffers())


# --- blocks ----------------------------------------------------------------------------------


def test_every_cbfe_ratio_up_to_the_channels_builds_another_module() -> None:
    """0.2's floor of 8 hidden channels made ratios 2, 4 and 8 one module on 16-channel stages."""
    for channels in (4, 16, 40):
        hidden = [CBFE(channels, ratio=r).fc1.out_channels for r in (1, 2, 4, 8, 16) if r <= channels]
        assert len(set(hidden)) == len(hidden), (channels, hidden)
    assert CBFE(4, ratio=8).fc1.out_channels == 1  # r > C: one hidden channel, never zero


def test_sepconv_is_the_sd_codes_two_depthwise_pointwise_pairs() -> None:
    """SD's SepConv: dw(stride) -> pw C_in -> BN -> ReLU -> dw -> pw C_out -> BN -> ReLU."""
    m = SepConv(8, 16, stride=2)
    layers = [x for x in m.modules() if not list(x.children())]
    kinds = [(type(x).__name__, getattr(x, "groups", None), getattr(x, "stride", None)) for x in layers]
    assert kinds == [
        ("Conv2d", 8, (2, 2)), ("Conv2d", 1, (1, 1)), ("BatchNorm2d", None, None), ("ReLU", None, None),
        ("Conv2d", 8, (1, 1)), ("Conv2d", 1, (1, 1)), ("BatchNorm2d", None, None), ("ReLU", None, None),
    ]  # fmt: skip
    assert [x.out_channels for x in layers if isinstance(x, torch.nn.Conv2d)] == [8, 8, 8, 16]
    x = torch.randn(2, 8, 8, 8)
    want = x
    for layer in layers:
        want = layer(want)
    torch.testing.assert_close(m(x), want)


def test_cbfe_formula() -> None:
    torch.manual_seed(0)
    m = CBFE(32, ratio=16).eval()
    assert m.fc1.out_channels == 2  # the paper's C / r (at least 1)
    assert CBFE(64, ratio=2).fc1.out_channels == 32
    for bn in (m.bn1, m.bn2):  # non-trivial statistics, so the check covers BN placement
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 32, 4, 4)
    z = torch.sigmoid(m.bn2(m.fc2(torch.relu(m.bn1(m.fc1(x))))))
    torch.testing.assert_close(m(x), x * z)


@pytest.mark.parametrize("branch", [SDBranch, LiteBranch])
@pytest.mark.parametrize(
    ("in_chs", "in_size", "out_chs", "out_size"),
    [
        (16, (16, 16), 128, (2, 2)),
        (24, (9, 9), 80, (2, 2)),
        (8, (5, 3), 40, (1, 1)),
        (64, (2, 2), 128, (1, 1)),
    ],
)
def test_branch_aligns_to_deepest_map(
    branch: type[nn.Module], in_chs: int, in_size: tuple[int, int], out_chs: int, out_size: tuple[int, int]
) -> None:
    m = branch(in_chs, in_size, out_chs, out_size).eval()
    assert m(torch.randn(2, in_chs, *in_size)).shape == (2, out_chs, *out_size)


# --- the multi-exit network ------------------------------------------------------------------


def _deploy_keys_map(net: SelfDistillNet, exit: str) -> dict[str, str]:
    """Deploy state-dict key -> the net's key for the same tensor."""
    n_stages = 4 if exit == "final" else int(exit)
    out = {}
    for k in net.state_dict():
        if k.startswith("stem.") or (k.startswith("stages.") and int(k.split(".")[1]) < n_stages):
            out[k] = k
        elif k.startswith(f"branches.{exit}."):
            out["branch." + k.split(".", 2)[2]] = k
        elif k.startswith(f"heads.{exit}."):
            out["head." + k.split(".", 2)[2]] = k
    return out


@pytest.mark.parametrize("cbfe", CBFE_LOCATIONS)
@pytest.mark.parametrize("fusion", FUSION_TYPES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("arch", ARCHS)
def test_network_contract(arch: str, style: str, fusion: str, cbfe: str) -> None:
    config = make_config(arch, style, fusion, cbfe)
    net = make_net(config)
    x = torch.randn(2, 3, *SIZE)
    out = net(x)
    assert isinstance(out, SDOutput)
    assert net.exits == config.exits == ("1", "2", "3", "final")
    assert list(out.logits) == list(out.features) == list(net.exits)
    c_l = net.feature_info.channels()[-1]
    for e in net.exits:
        assert out.logits[e].shape == (2, NUM_CLASSES)
        assert out.features[e].shape == (2, c_l, 2, 2)
        assert torch.isfinite(out.logits[e]).all() and torch.isfinite(out.features[e]).all()
    if fusion == "none":
        assert out.fused_logits is None and out.fused_features is None
    else:
        assert out.fused_logits is not None and out.fused_logits.shape == (2, NUM_CLASSES)
        assert out.fused_features is not None and out.fused_features.shape == (2, c_l, 2, 2)
        assert torch.isfinite(out.fused_logits).all()

    state = net.state_dict()
    for e in net.exits:
        deployed = net.deploy(e).eval()
        assert type(deployed) is not SelfDistillNet
        assert torch.equal(deployed(x), out.logits[e]), f"exit {e}"
        # Exactly this exit's tensors, nothing of other exits or of the fusion.
        keys = _deploy_keys_map(net, e)
        dep_state = deployed.state_dict()
        assert set(dep_state) == set(keys)
        assert all(torch.equal(dep_state[k], state[keys[k]]) for k in dep_state)
        assert not any(k.startswith(("fusion", "branches", "heads")) for k in dep_state)

    costs = list(exit_costs(config, num_classes=NUM_CLASSES, in_chans=3, input_size=SIZE).values())
    _check_costs_grow_with_depth(arch, style, costs)


def _check_costs_grow_with_depth(arch: str, style: str, costs: list) -> None:
    """Deeper exits cost more, where the architecture makes that true.

    Not everywhere: BYOT's k×k stride-k conv (``lite``) has (C_L/4)²·k² weights, so at exit 1
    (k = 8) it outweighs stage 2 plus the exit-2 branch; and MobileNetV2's first stages are so
    cheap that the exit-1 SD branch (three SepConvs up to C_L) outweighs stage 2 plus a two-step
    branch. The final exit is always the most expensive.
    """
    params, macs = [c.params for c in costs], [c.macs for c in costs]
    assert params[-1] > max(params[:-1]) and macs[-1] > max(macs[:-1])
    if arch == "resnet" or style == "sd":
        assert all(a < b for a, b in itertools.pairwise(macs)), macs
    if arch == "resnet" and style == "sd":
        assert all(a < b for a, b in itertools.pairwise(params)), params


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("arch", ARCHS)
def test_deploy_torchscript(arch: str, style: str) -> None:
    net = make_net(make_config(arch, style, "channel_attention", "trunk" if style == "sd" else "branch"))
    x, x2 = torch.randn(2, 3, *SIZE), torch.randn(3, 3, *SIZE)
    out = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates torch.jit
        for e in ("1", "final"):
            deployed = net.deploy(e).eval()
            traced = torch.jit.trace(deployed, x, check_trace=False)
            assert torch.equal(traced(x), out.logits[e])
            assert torch.equal(traced(x2), deployed(x2))
        scripted = torch.jit.script(net.deploy("1").eval())
        assert torch.equal(scripted(x), out.logits["1"])


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    ("arch", "size"), [("resnet", (8, 8)), ("mobilenetv2", (11, 9)), ("resnet", (13, 20))]
)
def test_odd_and_tiny_inputs(arch: str, style: str, size: tuple[int, int]) -> None:
    net = make_net(make_config(arch, style, "spatial_mask_avg", "branch"), size=size, in_chans=1)
    x = torch.randn(2, 1, *size)
    out = net(x)
    h_l, w_l = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
    assert all(f.shape[-2:] == (h_l, w_l) for f in out.features.values())
    for e in net.exits:
        assert torch.equal(net.deploy(e).eval()(x), out.logits[e])


@pytest.mark.parametrize("placement", [(), (2,), (3, 1)])
def test_placement(placement: tuple[int, ...]) -> None:
    net = make_net(make_config(placement=placement, fusion="channel_attention"))
    out = net(torch.randn(2, 3, *SIZE))
    assert list(out.logits) == [str(p) for p in sorted(placement)] + ["final"]
    assert list(net.branches) == [str(p) for p in sorted(placement)]
    assert out.fused_logits is not None


def test_deploy_errors_and_mode() -> None:
    net = make_net(make_config(placement=(2,)))
    with pytest.raises(ValueError, match=r"exit '1' is not one of .*2, final"):
        net.deploy("1")
    net.train()
    assert net.deploy("2").training
    net.eval()
    assert not net.deploy("2").training
    shared = net.deploy("final", share_weights=True)
    assert shared.stem is net.stem
    assert net.deploy("final").stem is not net.stem


def test_config_errors() -> None:
    # Records are validated where they are declared, so a bad value never reaches a builder.
    with pytest.raises(ValueError, match="placement"):
        make_config(placement=(4,))
    with pytest.raises(ValueError, match="attention"):
        make_config(fusion="attention")
    with pytest.raises(ValueError, match="resnet"):
        make_config(arch="vgg")
    with pytest.raises(ConfigError, match="8×8"):
        SelfDistillNet(make_config(), num_classes=2, input_size=(4, 4))


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_fusion_starts_as_deepest_map(arch: str) -> None:
    net = make_net(make_config(arch, fusion="residual"))
    net.train()  # training-mode BN as well: gamma = beta = 0 gives exactly zero
    out = net(torch.randn(2, 3, *SIZE))
    assert torch.equal(out.fused_features, out.features["final"])


def test_fusion_inputs_not_detached() -> None:
    for fusion in FUSION_TYPES[1:]:
        net = make_net(make_config(fusion=fusion))
        out = net(torch.randn(2, 3, *SIZE))
        out.fused_logits.sum().backward()
        assert net.branches["1"].attn.conv.pair1.conv_dw.weight.grad is not None, fusion

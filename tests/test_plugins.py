"""A user's own backbone with no change to sdsearch, plugins, and the JSON Schema of space files."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

from sdsearch.cli import main
from sdsearch.core.config import BackboneConfig, BranchesConfig, CBFEConfig, FusionConfig, ModelConfig
from sdsearch.core.registry import BACKBONES
from sdsearch.nn.network import SelfDistillNet
from sdsearch.space.schema import json_schema

ROOT = Path(__file__).resolve().parents[1]

#: The README's example of the backbone contract, written as a user would: no sdsearch import.
USER_BACKBONE = '''
import torch
from torch import nn


class FeatureInfo:
    def __init__(self, channels, reductions):
        self._channels, self._reductions = channels, reductions

    def channels(self):
        return list(self._channels)

    def reduction(self):
        return list(self._reductions)


class TinyNet(nn.Module):
    """Four stages of conv-BN-ReLU blocks, each halving the map after the first."""

    def __init__(self, in_chans, width, depth):
        super().__init__()
        chs = [max(8, int(16 * width * 2**i)) for i in range(4)]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, chs[0], 3, padding=1), nn.BatchNorm2d(chs[0]), nn.ReLU())
        self.stages = nn.ModuleList()
        prev = chs[0]
        for i, ch in enumerate(chs):
            layers = [nn.Conv2d(prev, ch, 3, stride=1 if i == 0 else 2, padding=1), nn.BatchNorm2d(ch), nn.ReLU()]
            for _ in range(depth - 1):
                layers += [nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU()]
            self.stages.append(nn.Sequential(*layers))
            prev = ch
        self.feature_info = FeatureInfo(chs, [1, 2, 4, 8])

    def forward(self, x):
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def tinynet(*, in_chans, width, depth):
    return TinyNet(in_chans, width, depth)
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module written by the test, importable as ``mybackbones`` (a user's package on the path)."""
    (tmp_path / "mybackbones.py").write_text(textwrap.dedent(USER_BACKBONE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mybackbones:tinynet"
    sys.modules.pop("mybackbones", None)


def _config(tmp_path: Path, arch: str, **space: object) -> Path:
    doc = {
        "name": "user",
        "data": {"dataset": "digits"},
        "train": {"epochs": 1, "batch_size": 64},
        "space": {
            "backbone": {"arch": arch, "width": 0.5, "depth": 1},
            "branches": {"placement": [1, 2], "style": "lite"},
            "cbfe": {"location": "trunk", "ratio": 4},
            "fusion": {"type": "residual"},
            **space,
        },
    }
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_users_backbone_works_end_to_end(user_module: str, tmp_path: Path, capsys) -> None:
    config = _config(tmp_path, user_module)
    assert main(["validate", str(config)]) == 0
    capsys.readouterr()
    assert main(["cost", str(config), "--json", "--no-latency"]) == 0
    exits = json.loads(capsys.readouterr().out)["exits"]
    assert [e["exit"] for e in exits] == ["1", "2", "final"]
    # A shallow exit runs only the stages it needs: cheaper than the final exit.
    assert exits[0]["macs"] < exits[-1]["macs"] and exits[0]["params"] < exits[-1]["params"]
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and 0.0 < metrics["test_accuracy"] <= 1.0


def test_a_users_backbone_deploys_every_exit_bit_for_bit(user_module: str) -> None:
    cfg = ModelConfig(
        backbone=BackboneConfig(arch=user_module, width=0.5, depth=2),
        branches=BranchesConfig(placement=(1, 2, 3), style="sd"),
        cbfe=CBFEConfig(location="trunk"),
        fusion=FusionConfig(type="channel_attention"),
    )
    torch.manual_seed(0)
    net = SelfDistillNet(cfg, num_classes=10, in_chans=1, input_size=(8, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    out = net(x)
    for exit_name in net.exits:
        deployed = net.deploy(exit_name).eval()
        assert torch.equal(deployed(x), out.logits[exit_name]), exit_name
    # The user's parameters are shared by the stages, not copied: each appears once.
    assert len({id(p) for p in net.parameters()}) == len(list(net.parameters()))
    # On the meta device too: the factory is called under torch.device("meta") for costing.
    meta = SelfDistillNet(cfg, num_classes=10, in_chans=1, input_size=(8, 8), device="meta")
    assert all(p.is_meta for p in meta.parameters())


def test_a_backbone_that_breaks_the_contract_is_one_line(user_module: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "badbackbones.py").write_text(
        "from torch import nn\n\ndef flat(*, in_chans, width, depth):\n    return nn.Conv2d(in_chans, 8, 3)\n"
    )
    assert main(["cost", str(_config(tmp_path, "badbackbones:flat")), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "feature_info" in err and "features_only" in err
    assert main(["validate", str(_config(tmp_path, "nosuchpackage.module:factory"))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "space.backbone.arch: cannot import 'nosuchpackage.module:factory'" in err


def test_a_registered_backbone_is_accepted_by_validation(user_module: str) -> None:
    import mybackbones

    from sdsearch.nn.backbones import register_backbone
    from sdsearch.space.space import parse_space

    with pytest.raises(Exception, match="'tinynet' is not one of resnet, mobilenetv2"):
        parse_space({"space": {"backbone": {"arch": "tinynet"}}})
    register_backbone(mybackbones.tinynet)  # as a user's script would, before sdsearch.run(...)
    try:
        space = parse_space({"space": {"backbone": {"arch": {"choice": ["resnet", "tinynet"]}}}})
        assert space.dims["backbone.arch"].choices == ("resnet", "tinynet")
        cfg = ModelConfig(backbone=BackboneConfig(arch="tinynet", width=0.5, depth=1))
        assert SelfDistillNet(cfg, num_classes=3, in_chans=1, input_size=(8, 8)).feature_info.reduction() == [
            1,
            2,
            4,
            8,
        ]
    finally:
        BACKBONES.unregister("tinynet")


def test_installed_plugins_are_found_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution advertising group ``sdsearch.backbones`` adds its backbones to the registry."""
    (tmp_path / "pluginpkg.py").write_text(textwrap.dedent(USER_BACKBONE))
    dist = tmp_path / "pluginpkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pluginpkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sdsearch.backbones]\nplugnet = pluginpkg:tinynet\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    BACKBONES.refresh()
    try:
        assert "plugnet" in BACKBONES.names()
        net = SelfDistillNet(
            ModelConfig(backbone=BackboneConfig(arch="plugnet", width=0.5, depth=1)), num_classes=3, in_chans=1,
            input_size=(8, 8),
        )  # fmt: skip
        assert net.feature_info.channels() == [8, 16, 32, 64]
    finally:
        monkeypatch.undo()
        BACKBONES.unregister("plugnet")  # loaded on first use, like any plugin
        BACKBONES.refresh()
        sys.modules.pop("pluginpkg", None)


# -- the JSON Schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_validates_against_the_json_schema(path: Path) -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


def test_the_schema_refuses_what_the_validator_refuses() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    for bad in (
        {"space": {"fusion": {"type": "attention"}}},
        {"space": {"backbone": {"widht": 0.5}}},
        {"sampller": "tpe"},
        {"trials": 0},
        {"space": {"backbone": {"depth": {"float": [1, 2]}}}},
    ):
        assert not validator.is_valid(bad), bad


def test_schema_command_prints_draft_2020_12(capsys) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "space" in schema["properties"]


def test_the_shipped_schema_file_is_up_to_date() -> None:
    """spaces/schema.json gives editors completion (the spaces' yaml-language-server line points at it)."""
    shipped = json.loads((ROOT / "spaces" / "schema.json").read_text())
    assert shipped == json_schema(), "regenerate it: sdsearch schema > spaces/schema.json"

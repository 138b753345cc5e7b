"""The self-distillation loss: formula, teachers, gradients, and short real training on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdsearch.core.config import (
    BackboneConfig,
    BranchesConfig,
    CBFEConfig,
    FusionConfig,
    LossConfig,
    ModelConfig,
)
from sdsearch.core.registry import FUSIONS
from sdsearch.nn import losses
from sdsearch.nn.losses import SelfDistillLoss, kd_loss
from sdsearch.nn.network import SDOutput, SelfDistillNet

FUSION_TYPES = FUSIONS.names()

SIZE = (16, 16)


def make_net(
    fusion: str = "none", arch: str = "resnet", cbfe: str = "none", in_chans: int = 3, size=SIZE, classes=5
) -> SelfDistillNet:
    torch.manual_seed(0)
    config = ModelConfig(
        backbone=BackboneConfig(arch=arch, width=0.25, depth=1),
        branches=BranchesConfig(placement=(1, 2, 3), style="sd"),
        cbfe=CBFEConfig(location=cbfe),
        fusion=FusionConfig(type=fusion),
    )
    return SelfDistillNet(config, num_classes=classes, in_chans=in_chans, input_size=size)


def fake_output(
    logits: dict[str, torch.Tensor], fused: torch.Tensor | None = None, chs: int = 128
) -> SDOutput:
    feats = {e: torch.zeros(z.shape[0], chs, 2, 2) for e, z in logits.items()}
    fused_feats = None if fused is None else torch.zeros(fused.shape[0], chs, 2, 2)
    return SDOutput(logits, fused, feats, fused_feats)


def test_kd_zero_when_student_equals_teacher() -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 10) * 5
    assert kd_loss(z, z, 3.0).item() == 0.0
    net = make_net()
    loss_fn = SelfDistillLoss(LossConfig(teacher="ensemble", feature_weight=0.0), net)
    out = fake_output(dict.fromkeys(net.exits, z))
    assert loss_fn(out, torch.zeros(4, dtype=torch.long)).parts["kd"].item() == 0.0
    assert kd_loss(z, z.flip(0), 3.0).item() > 0


@pytest.mark.parametrize("kd_t2", [False, True])
@pytest.mark.parametrize("style", ["byot", "sd"])
def test_loss_formula(style: str, kd_t2: bool) -> None:
    torch.manual_seed(0)
    net = make_net()
    cfg = LossConfig(
        teacher="deepest", kd_weight=0.3, temperature=3.0, feature_weight=0.0, style=style, kd_t2=kd_t2
    )
    loss_fn = SelfDistillLoss(cfg, net)
    y = torch.tensor([0, 1, 2, 3])
    logits = {e: torch.randn(4, 5) for e in net.exits}
    res = loss_fn(fake_output(logits), y)

    # BYOT: every classifier's CE times (1 - alpha), the deepest included; SD: only the shallow ones.
    weight = {"byot": dict.fromkeys(net.exits, 0.7), "sd": {"1": 0.7, "2": 0.7, "3": 0.7, "final": 1.0}}[
        style
    ]
    ce = sum(F.cross_entropy(logits[e], y) * weight[e] for e in net.exits)
    t = logits["final"] / 3
    kl = sum(
        (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(logits[e] / 3, 1))).sum(1).mean()
        for e in ("1", "2", "3")
    )
    kd = 0.3 * (9.0 if kd_t2 else 1.0) * kl  # BYOT's eq. 1 and the SD code: no T² unless asked
    torch.testing.assert_close(res.parts["ce"], ce)
    torch.testing.assert_close(res.parts["kd"], kd)
    torch.testing.assert_close(res.total, ce + kd)
    assert res.parts["feature"].item() == 0.0
    assert len(loss_fn.adapters) == 0  # feature_weight 0: no adapters to optimise


def test_teachers_are_detached_and_pick_students() -> None:
    torch.manual_seed(0)
    net = make_net(fusion="channel_attention")
    y = torch.tensor([0, 1])
    for teacher, students in [("deepest", "123"), ("fused", "123f"), ("ensemble", None)]:
        logits = {e: torch.randn(2, 5, requires_grad=True) for e in net.exits}
        fused = torch.randn(2, 5, requires_grad=True)
        cfg = LossConfig(teacher=teacher, ce_weight=0.0, feature_weight=0.0)
        SelfDistillLoss(cfg, net)(fake_output(logits, fused), y).total.backward()
        # ce_weight 0 keeps CE in the graph with zero gradient; KD must add none.
        assert fused.grad is None or not fused.grad.any()  # never a student; teacher detached
        for e, z in logits.items():
            got = z.grad is not None and z.grad.abs().sum().item() > 0
            if teacher == "ensemble":
                # Every exit is a student; the ensemble target itself is detached.
                assert got, (teacher, e)
            else:
                assert got == (e[0] in students), (teacher, e)


def expected_loss(
    out: SDOutput,
    y: torch.Tensor,
    cfg: LossConfig,
    adapters: dict[str, torch.nn.Conv2d],
    heads: dict[str, torch.nn.Linear] | None = None,
    gap_heads: dict[str, torch.nn.Linear] | None = None,
) -> dict[str, torch.Tensor]:
    """The loss of nn/losses.py's docstring written out by hand (plain softmax sums, an einsum for the
    1×1 convs, matrix products for RSKD's heads), with the teacher explicitly detached; nothing is
    shared with ``SelfDistillLoss``."""
    sd = cfg.style == "sd"
    exits = list(out.logits)
    keep = 1 - cfg.kd_weight
    if sd:  # SD: shallow exits keep 1 - alpha; the deepest exit and the fused head the full CE
        ce = sum(F.cross_entropy(out.logits[e], y) * (keep if e != "final" else 1.0) for e in exits)
        fused_weight = 1.0
    else:  # BYOT: every classifier keeps 1 - alpha, the deepest and the fused head included
        ce = sum(F.cross_entropy(out.logits[e], y) * keep for e in exits)
        fused_weight = keep
    if out.fused_logits is not None:
        ce = ce + F.cross_entropy(out.fused_logits, y) * fused_weight
    if cfg.teacher == "fused":
        z_t, f_t, students = out.fused_logits, out.fused_features, exits
    elif cfg.teacher == "ensemble":
        z_t, f_t, students = torch.stack([out.logits[e] for e in exits]).mean(0), out.features["final"], exits
    else:
        z_t, f_t, students = out.logits["final"], out.features["final"], exits[:-1]
    z_t, f_t = z_t.detach(), f_t.detach()
    t = cfg.temperature
    p_t = F.softmax(z_t / t, dim=1)
    kl = sum((p_t * (p_t.log() - F.log_softmax(out.logits[e] / t, dim=1))).sum(1).mean() for e in students)
    if cfg.hint == "byot":  # BYOT's eq. 1: the branch map itself against the teacher's
        mse = sum(((out.features[e] - f_t) ** 2).mean() for e in exits[:-1])
    else:
        mse = sum(
            (
                (
                    torch.einsum("oi,bihw->bohw", a.weight[:, :, 0, 0], out.features[e])
                    + a.bias[None, :, None, None]
                    - f_t
                )
                ** 2
            ).mean()
            for e, a in adapters.items()
        )
    gap = torch.zeros(())
    for e, h in (heads or {}).items():  # RSKD: G_e's head regresses the logit gap to the teacher
        pooled = out.features[e].mean(dim=(2, 3))
        gap = gap + ((pooled @ h.weight.T + h.bias - (z_t - out.logits[e]).detach()) ** 2).mean()
    for e, h in (gap_heads or {}).items():  # ... and the map a branch reads, the pooled feature gap
        pooled = out.stage_features[e].mean(dim=(2, 3))
        target = (f_t.mean(dim=(2, 3)) - out.features[e].mean(dim=(2, 3))).detach()
        gap = gap + ((pooled @ h.weight.T + h.bias - target) ** 2).mean()
    parts = {
        "ce": cfg.ce_weight * ce,
        "kd": cfg.kd_weight * (t * t if cfg.kd_t2 else 1.0) * kl,
        "feature": cfg.feature_weight * mse,
        "rskd": cfg.rskd_weight * gap,
    }
    return {**parts, "total": parts["ce"] + parts["kd"] + parts["feature"] + parts["rskd"]}


#: Loss options beyond the style: (kd_t2, hint, rskd_weight, rskd_layers).
OPTIONS = [(True, "adapter", 0.0, "last"), (False, "byot", 0.5, "last"), (False, "adapter", 0.8, "all")]


@pytest.mark.parametrize(("kd_t2", "hint", "rskd_weight", "rskd_layers"), OPTIONS)
@pytest.mark.parametrize("style", ["byot", "sd"])
@pytest.mark.parametrize(
    ("fusion", "teacher"),
    [("residual", "fused"), ("channel_attention", "deepest"), ("channel_attention", "ensemble")],
)
def test_full_loss_formula_with_fusion_and_feature_hints(
    fusion: str, teacher: str, style: str, kd_t2: bool, hint: str, rskd_weight: float, rskd_layers: str
) -> None:
    net = make_net(fusion=fusion).train()
    with torch.no_grad():  # zero-initialised gammas make e.g. the residual fused map equal F_L
        for p in net.parameters():
            if not p.any():
                p.normal_(std=0.1)
    cfg = LossConfig(
        teacher=teacher, kd_weight=0.7, temperature=2.5, feature_weight=0.4, ce_weight=0.6, style=style,
        kd_t2=kd_t2, hint=hint, rskd_weight=rskd_weight, rskd_layers=rskd_layers,
    )  # fmt: skip
    loss_fn = SelfDistillLoss(cfg, net)
    # One adapter per branch exit (none for final) with hint: adapter; BYOT's hint has none.
    assert sorted(loss_fn.adapters) == (["1", "2", "3"] if hint == "adapter" else [])
    students = ["1", "2", "3"] + ([] if teacher == "deepest" else ["final"])
    assert sorted(loss_fn.residual_heads) == (students if rskd_weight else [])
    assert sorted(loss_fn.feature_gap_heads) == (["1", "2", "3"] if rskd_layers == "all" else [])
    torch.manual_seed(1)
    for p in loss_fn.parameters():  # non-trivial biases too (a conv's default init is small)
        torch.nn.init.normal_(p, std=0.3)
    x, y = torch.randn(4, 3, *SIZE), torch.tensor([0, 1, 2, 4])
    out = net(x)
    res = loss_fn(out, y)
    want = expected_loss(
        out,
        y,
        cfg,
        dict(loss_fn.adapters.items()),
        dict(loss_fn.residual_heads),
        dict(loss_fn.feature_gap_heads),
    )
    for k in ("ce", "kd", "feature") + (("rskd",) if rskd_weight else ()):
        assert want[k].item() > 1e-4, k  # every part really contributes
        torch.testing.assert_close(res.parts[k], want[k].detach(), msg=lambda m, k=k: f"{k}: {m}")
    torch.testing.assert_close(res.total, want["total"])
    # The gradients agree too: this pins down which tensors the loss detaches.
    named = [*net.named_parameters(), *(("loss." + n, p) for n, p in loss_fn.named_parameters())]
    params = [p for _, p in named]
    got = torch.autograd.grad(res.total, params, retain_graph=True, allow_unused=True)
    ref = torch.autograd.grad(want["total"], params, allow_unused=True)
    for (name, _), g, r in zip(named, got, ref, strict=True):
        if r is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, r, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("teacher", ["fused", "deepest", "ensemble"])
def test_kd_and_feature_parts_never_reach_the_teacher(teacher: str, monkeypatch) -> None:
    """With ce_weight 0 only KD and the feature hints make gradients: the teacher's logits and map
    get none, every student (logits and branch map G_i) does, and all of it matches the hand
    formula with an explicitly detached teacher."""
    net = make_net(fusion="channel_attention")
    chs = net.feature_info.channels()[-1]
    cfg = LossConfig(teacher=teacher, kd_weight=0.5, temperature=2.0, feature_weight=0.5, ce_weight=0.0)
    loss_fn = SelfDistillLoss(cfg, net)
    torch.manual_seed(2)
    logits = {e: (torch.randn(3, 5) * 2).requires_grad_() for e in net.exits}
    feats = {e: torch.randn(3, chs, 2, 2, requires_grad=True) for e in net.exits}
    fused = (torch.randn(3, 5) * 2).requires_grad_()
    fused_map = torch.randn(3, chs, 2, 2, requires_grad=True)
    out = SDOutput(logits, fused, feats, fused_map)
    y = torch.tensor([0, 1, 2])
    # The ensemble target is the mean of its own students, so the gradient through it cancels out
    # exactly (Σ_i ∂KL/∂z_t = 0): only a look at what kd_loss is handed can show it is detached.
    seen = []

    def spy(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
        seen.append((student.requires_grad, target.requires_grad))
        return kd_loss(student, target, temperature)

    monkeypatch.setattr(losses, "kd_loss", spy)
    res = loss_fn(out, y)
    assert res.parts["kd"].item() > 0 and res.parts["feature"].item() > 0
    students = ["1", "2", "3"] + ([] if teacher == "deepest" else ["final"])
    assert seen == [(True, False)] * len(students), "one KD term per student, each with a detached teacher"
    leaves = {**{f"z{e}": z for e, z in logits.items()}, "zf": fused}
    leaves |= {f"G{e}": g for e, g in feats.items()} | {"Ffused": fused_map}
    grads = dict(
        zip(leaves, torch.autograd.grad(res.total, list(leaves.values()), allow_unused=True), strict=True)
    )

    def has_grad(name: str) -> bool:
        g = grads[name]
        return g is not None and bool(g.abs().sum() > 0)

    teacher_logits, teacher_map = {"fused": ("zf", "Ffused"), "deepest": ("zfinal", "Gfinal")}.get(
        teacher, (None, "Gfinal")
    )
    assert not has_grad(teacher_map), "the teacher's feature map must be detached"
    if teacher_logits is not None:
        assert not has_grad(teacher_logits), "the teacher's logits must be detached"
    assert all(has_grad(f"z{e}") for e in students), "every KD student learns from the teacher"
    assert all(has_grad(f"G{e}") for e in ("1", "2", "3")), "every branch map learns from the hint"
    assert not has_grad("zf"), "the fused head is never a KD student"
    # Exact gradients, against the hand formula with an explicitly detached teacher.
    want = expected_loss(out, y, cfg, dict(loss_fn.adapters.items()))["total"]
    ref = torch.autograd.grad(want, list(leaves.values()), allow_unused=True)
    for name, r in zip(leaves, ref, strict=True):
        g = grads[name]
        if r is None or not r.any():
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, r, msg=lambda m, n=name: f"{n}: {m}")


def test_fused_teacher_needs_fusion() -> None:
    with pytest.raises(ValueError, match="fusion"):
        SelfDistillLoss(LossConfig(teacher="fused"), make_net(fusion="none"))
    with pytest.raises(ValueError, match="teacher"):
        LossConfig(teacher="self")  # refused where it is declared, before any network is built
    with pytest.raises(ValueError, match="style"):
        LossConfig(style="dkd")


@pytest.mark.parametrize("fusion", FUSION_TYPES[1:])
def test_gradients_reach_every_parameter(fusion: str) -> None:
    net = make_net(fusion=fusion, cbfe="branch").train()
    loss_fn = SelfDistillLoss(LossConfig(teacher="fused", feature_weight=0.1), net)
    params = dict(net.named_parameters()) | {f"loss.{k}": p for k, p in loss_fn.named_parameters()}
    assert any(k.startswith("loss.adapters.") for k in params)
    opt = torch.optim.SGD(params.values(), lr=0.1)
    x, y = torch.randn(4, 3, *SIZE), torch.tensor([0, 1, 2, 3])
    # Two steps: zero-initialised gammas (residual blocks, residual fusion) block gradients to the
    # layers before them until the first step has moved the gammas.
    for _ in range(2):
        opt.zero_grad()
        loss_fn(net(x), y).total.backward()
        opt.step()
    missing = [k for k, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in params.values())


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.mark.parametrize("fusion", FUSION_TYPES)
def test_short_training_on_digits(fusion: str, digits: tuple[torch.Tensor, ...]) -> None:
    x_tr, y_tr, x_te, y_te = digits
    net = make_net(fusion=fusion, in_chans=1, size=(8, 8), classes=10)
    teacher = "deepest" if fusion == "none" else "fused"
    loss_fn = SelfDistillLoss(LossConfig(teacher=teacher), net)
    opt = torch.optim.SGD([*net.parameters(), *loss_fn.parameters()], lr=0.05, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    epoch_losses = []
    for _ in range(3):
        net.train()
        total, n = 0.0, 0
        for idx in torch.randperm(len(y_tr), generator=gen).split(64):
            if len(idx) < 2:  # BatchNorm needs two samples on the 1×1 stage-4 map
                continue
            loss = loss_fn(net(x_tr[idx]), y_tr[idx]).total
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        epoch_losses.append(total / n)
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses
    net.eval()
    with torch.no_grad():
        out = net(x_te)
        acc = (net.deploy("final")(x_te).argmax(1) == y_te).float().mean().item()
        assert torch.equal(out.logits["final"].argmax(1), net.deploy("final")(x_te).argmax(1))
    assert acc > 0.6, acc


def test_rskd_heads_and_hint_forms_are_training_only() -> None:
    """RSKD's heads and the hint adapters live in the loss: the network, its deployed exits and
    every deploy cost are the same with or without them."""
    from sdsearch.core.config import TrialConfig
    from sdsearch.cost.metrics import DeployMetrics
    from sdsearch.data.datasets import DataShape

    model = make_net().config
    plain = TrialConfig(model=model, loss=LossConfig())
    rskd = TrialConfig(model=model, loss=LossConfig(rskd_weight=1.0, rskd_layers="all", hint="byot"))
    shape = DataShape(in_chans=3, height=SIZE[0], width=SIZE[1], num_classes=5)
    assert DeployMetrics(shape)(plain) == DeployMetrics(shape)(rskd)
    net = make_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss_fn = SelfDistillLoss(rskd.loss, net)
    assert len(loss_fn.residual_heads) == 3 and len(loss_fn.feature_gap_heads) == 3
    assert net.state_dict().keys() == before.keys()  # nothing was added to the network
    deployed = net.deploy("2")
    assert not any("residual" in k or "gap" in k for k in deployed.state_dict())

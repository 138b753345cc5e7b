"""What a trial trains, as one hash: configs that build the same network and loss and train alike are
one trial, so a study trains it once.

Two configs can differ and still train the same thing: a CBFE ratio above the channels builds the
same one-channel module as the next ratio down, a KD temperature means nothing at ``kd_weight: 0``,
and so on. The fingerprint is therefore taken from what is built (the network and the loss's own
modules, on the meta device: no memory, milliseconds) plus the loss leaves that act, and everything
else of the config (data, train, deploy, seed) as it is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sdsearch.core.config import LossConfig, TrialConfig
from sdsearch.data.datasets import DataShape

__all__ = ["active_loss", "training_fingerprint"]


def training_fingerprint(cfg: TrialConfig, shape: DataShape) -> str:
    """A hex digest equal for two configs exactly when they build and train the same thing.

    Raises:
        ConfigError, ValueError: the config cannot be built for ``shape`` (as ``build`` would).
    """
    from sdsearch.nn.losses import SandwichLoss, SelfDistillLoss
    from sdsearch.nn.network import SelfDistillNet

    dims = {"num_classes": shape.num_classes, "in_chans": shape.in_chans, "input_size": shape.input_size}
    rest = cfg.to_dict()
    if cfg.elastic:  # every width's network, layer by layer: multipliers that build one network are one
        from sdsearch.nn.elastic import ElasticNet

        elastic = ElasticNet(cfg.model, cfg.train.elastic_widths, **dims, device="meta")
        network: object = {str(m): layout for m, layout in elastic.layouts().items()}
        loss: object = SandwichLoss(cfg.loss, elastic)
        rest["train"]["elastic_widths"] = list(elastic.multipliers)
    else:
        net = SelfDistillNet(cfg.model, **dims, device="meta")
        network, loss = repr(net), SelfDistillLoss(cfg.loss, net)
    # The architecture is in the network's repr; of the model section only the initialisation is not.
    rest["model"] = {"zero_init_last": cfg.model.backbone.zero_init_last}
    rest["loss"] = active_loss(cfg.loss)
    text = json.dumps({"network": network, "loss_modules": repr(loss), "config": rest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def active_loss(loss: LossConfig) -> dict[str, Any]:
    """The loss leaves that change training: a leaf whose term is switched off is left out.

    At ``kd_weight: 0`` both styles weight every CE by 1 (see ``nn.losses.ce_weights``) and the KD
    term is gone; the teacher still matters while hints or RSKD read its outputs.
    """
    out = loss.to_dict()
    if loss.kd_weight == 0:
        for key in ("temperature", "kd_t2", "style"):
            out.pop(key)
    if loss.feature_weight == 0:
        out.pop("hint")
    if loss.rskd_weight == 0:
        out.pop("rskd_layers")
    if loss.kd_weight == 0 and loss.feature_weight == 0 and loss.rskd_weight == 0:
        out.pop("teacher")
    return out

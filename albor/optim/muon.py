"""Muon for the hidden matrices, AdamW for the rest, as one optimizer (contract ``muon``).

``optim.name: muon`` trains every matrix inside the decoder blocks (the fused qkv, out, fused gate_up and
down projections) with torch's Muon: momentum, a Newton–Schulz orthogonalisation of the update, and
the learning rate scaled by 0.2·sqrt(max(rows, cols)) (``match_rms_adamw``), so the update's RMS is
AdamW's and the schedule's learning rate and weight decay carry over. The token embedding, the LM head
and the RMSNorm gains stay on AdamW, in ``adamw.param_groups``.

Both algorithms live in one ``torch.optim.Optimizer``, so the schedule sets every group's learning
rate, and a checkpoint saves and loads one state dict, exactly as with AdamW alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from albor.config import OptimConfig
from albor.optim.adamw import param_groups

# Jordan's Muon (2024): Nesterov momentum 0.95, five quintic Newton-Schulz iterations with these
# coefficients. Said here, not left to torch's defaults, so the contract can declare them.
MOMENTUM = 0.95
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
NS_STEPS = 5
# Moonshot's scaling ("Muon is Scalable for LLM Training", 2025): AdamW's lr and weight decay carry over.
ADJUST_LR = "match_rms_adamw"


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The trainable matrices inside the decoder blocks: the parameters Muon trains."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and name.startswith("blocks.")]


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer whose groups are stepped by torch's Muon (``algorithm: muon``) or AdamW (``adamw``).

    Each algorithm is a torch optimizer working on this optimizer's own group dicts and state, so a
    learning rate set here is the one it steps with, and ``state_dict`` holds both algorithms' state.
    """

    def __init__(self, muon: list[dict[str, Any]], adamw: list[dict[str, Any]], fused: bool) -> None:
        for group in muon:
            group["algorithm"] = "muon"
        for group in adamw:
            group["algorithm"] = "adamw"
        # Each torch optimizer fills in its defaults on these same dicts.
        self._muon = torch.optim.Muon(
            muon,
            momentum=MOMENTUM,
            nesterov=True,
            ns_coefficients=NS_COEFFICIENTS,
            ns_steps=NS_STEPS,
            adjust_lr_fn=ADJUST_LR,
        )
        self._adamw = torch.optim.AdamW(adamw, fused=fused)
        super().__init__(muon + adamw, defaults={})
        self._share()

    def _share(self) -> None:
        """Point both torch optimizers at this optimizer's groups and state (load_state_dict replaces them)."""
        for algorithm, opt in (("muon", self._muon), ("adamw", self._adamw)):
            opt.param_groups = [g for g in self.param_groups if g["algorithm"] == algorithm]
            opt.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share()

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self._muon.step()
        self._adamw.step()


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool = False) -> MuonAdamW:
    """Muon on ``hidden_matrices`` and AdamW on the rest, each with the configured lr and decoupled weight
    decay on matrices (the embedding and the head decay, the gains do not)."""
    hidden = hidden_matrices(model)
    muon_ids = {id(p) for p in hidden}
    rest = [p for p in model.parameters() if id(p) not in muon_ids]
    adamw = [g | {"lr": cfg.lr, "betas": cfg.betas, "eps": cfg.eps} for g in param_groups(rest, cfg.weight_decay)]
    muon = [{"params": hidden, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    return MuonAdamW(muon, [g for g in adamw if g["params"]], fused=fused)

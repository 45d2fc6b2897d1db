"""Client-side algorithm hooks: how an algorithm changes local training without a copy
of the loop (FedProx adds a loss term, SCAFFOLD corrects steps, FedALT swaps layers)."""

from typing import Protocol

import torch


class ClientHook(Protocol):
    """Called by ``train_local`` at fixed points; every method may be a no-op."""

    def extra_loss(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A term added to each micro-batch loss (already scaled), or None."""

    def after_step(self, model: torch.nn.Module, lr: float) -> None:
        """Runs after each optimizer step (e.g. SCAFFOLD's control-variate correction)."""

"""Workarounds for bugs in the libraries fedvlm loads models with; each says when to drop it."""

import numpy as np
import torch


def fuyu_pil_patchify() -> None:
    """transformers 5.x without torchvision: ``FuyuProcessor`` hands torch tensors to the
    PIL image processor's ``patchify_image``, which handles numpy only (``TypeError:
    transpose() takes 2 positional arguments``). Convert at the boundary. Idempotent; a
    no-op once the processor passes arrays it can take. Drop when transformers fixes it."""
    from transformers import FuyuImageProcessorPil

    original = FuyuImageProcessorPil.patchify_image
    if getattr(original, "fedvlm_wrapped", False):
        return

    def patchify_image(self, image, patch_size=None):
        if isinstance(image, torch.Tensor):
            return torch.from_numpy(np.asarray(original(self, image.numpy(), patch_size)))
        return original(self, image, patch_size)

    patchify_image.fedvlm_wrapped = True
    FuyuImageProcessorPil.patchify_image = patchify_image

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


def stable_4bit_on_cpu(model) -> None:
    """bitsandbytes 0.50 on CPUs with AVX512-BF16: the first no-grad forward of a 4-bit layer
    (any evaluation) repacks its weight for a bf16 kernel without autograd, after which
    gradients silently stop flowing through it. A federated loop evaluates between rounds,
    so keep every 4-bit layer on the regular path. Drop when bitsandbytes keeps autograd
    on that path."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False

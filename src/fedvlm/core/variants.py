"""What each LoRA variant (``federated.aggregation``) changes about which arrays train and
travel, registered once. Its server side is its strategy or aggregation mode
(``core/strategies``); its client side is ``fedvlm.client.variants``.
"""

from dataclasses import dataclass

from fedvlm.core.lora import A_SUFFIX, B_SUFFIX


@dataclass(frozen=True)
class KeyRule:
    """``frozen``: key suffixes that never train (each client rebuilds them from the shared
    seeded initialization); ``local``: suffixes that train but stay on the client;
    ``merges_into_base``: the server folds updates into the base weights and sends clients
    the factors they have not applied yet as ``extras["base_increment"]``; ``strategy``: the
    server strategy that replaces ``federated.strategy`` for this variant (``core/strategies``);
    ``mode``: FedAvg's aggregation mode (``FedAvg.aggregation``); ``personal``: every
    client's model is its own (the server's ``global_state`` a reference mean only), so the
    server sends nothing of it for evaluation or export."""

    frozen: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    merges_into_base: bool = False
    strategy: str | None = None
    mode: str = "naive"
    personal: bool = False  # each client holds its whole model; nothing of it comes down

    @property
    def personalized(self) -> bool:
        """Whether each client ends with a model of its own (FedSA-LoRA's B, FedALT)."""
        return bool(self.local) or self.personal


LORA_VARIANTS = {
    "naive": KeyRule(),  # FedIT: A and B averaged separately
    "svd": KeyRule(mode="svd"),  # FlexLoRA: exact dW, truncated SVD
    "ffa": KeyRule(frozen=(A_SUFFIX,)),  # FFA-LoRA, https://arxiv.org/abs/2403.12313
    "fedsa": KeyRule(local=(B_SUFFIX,)),  # FedSA-LoRA, https://arxiv.org/abs/2410.01463
    "flora": KeyRule(merges_into_base=True, strategy="flora"),  # FLoRA, https://arxiv.org/abs/2409.05976
    "fedex": KeyRule(merges_into_base=True, strategy="fedex"),  # FedEx-LoRA, https://arxiv.org/abs/2410.09432
    "fedalt": KeyRule(strategy="fedalt", personal=True),  # FedALT, https://arxiv.org/abs/2503.11880
}

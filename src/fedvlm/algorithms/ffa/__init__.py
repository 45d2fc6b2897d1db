"""FFA-LoRA (Sun et al. 2024, https://arxiv.org/abs/2403.12313), ``federated.aggregation=ffa``.

Every A stays frozen at the shared seeded initialization, which each client rebuilds
itself; only B (and non-LoRA modules) trains and travels, both ways, so averaging B is
exact. All of it is the registry line's fact ``frozen=(A_SUFFIX,)``, which
`fedvlm.core.sharing.SharingPlan` applies; the server side is ``federated.strategy``'s.
"""

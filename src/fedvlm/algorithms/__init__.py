"""Every federated algorithm fedvlm runs, one folder each and one line in `registry`, as
peft keeps one folder per tuner.

``STRATEGIES`` are the values of ``federated.strategy`` (how the server aggregates);
``VARIANTS`` the values of ``federated.aggregation`` (what a LoRA variant changes about
which arrays train and travel, and, for some, a server side of their own that runs instead
of ``federated.strategy``'s, which must then stay ``fedavg``). What every algorithm shares
(aggregation math, LoRA SVD, compression, sampling) is in ``fedvlm.core``.

An algorithm outside this package registers through an entry point in the group
``fedvlm.strategies`` or ``fedvlm.variants`` (``name = "module:ALGORITHM"``, an `Algorithm`).
"""

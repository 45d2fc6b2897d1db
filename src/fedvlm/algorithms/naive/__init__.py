"""FedIT (Zhang et al. 2024, https://arxiv.org/abs/2305.05644), ``federated.aggregation=naive``:
LoRA's A and B averaged separately by ``federated.strategy``'s server side. Nothing of its
own beyond its registry line.
"""

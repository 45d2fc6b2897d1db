"""FedSA-LoRA (Guo et al. 2024, https://arxiv.org/abs/2410.01463), ``federated.aggregation=fedsa``.

Only A (and non-LoRA modules) is shared and averaged; each client's B trains and stays
on the client, giving a personalized model ``W0 + s B_k A_avg``. All of it is the registry
line's fact ``local=(B_SUFFIX,)``: `fedvlm.core.sharing.SharingPlan` leaves B out of what
travels, the client unit (`fedvlm.client.unit.train`) keeps it in the node's store and
starts each round and each evaluation from it (`fedvlm.client.unit.start_state`); the
server side is ``federated.strategy``'s.
"""

"""Norm-bounded averaging (Sun et al. 2019, https://arxiv.org/abs/1911.07963),
``federated.strategy=norm_bound``: server.py (the option: ``clip_norm``)."""

"""Krum / Multi-Krum (Blanchard et al. 2017, https://arxiv.org/abs/1703.02757),
``federated.strategy=krum``: server.py (the options: ``krum_f``, ``krum_m``)."""

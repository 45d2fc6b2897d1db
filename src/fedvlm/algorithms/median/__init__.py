"""Coordinate-wise median (Yin et al. 2018, https://arxiv.org/abs/1803.01498),
``federated.strategy=median``: server.py."""

"""Coordinate-wise trimmed mean (Yin et al. 2018, https://arxiv.org/abs/1803.01498),
``federated.strategy=trimmed_mean``: server.py (the options: ``trim_beta``)."""

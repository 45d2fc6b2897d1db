"""FedAvgM (Hsu et al. 2019, https://arxiv.org/abs/1909.06335): server momentum, in server.py.
"""

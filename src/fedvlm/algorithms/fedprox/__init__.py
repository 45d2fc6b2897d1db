"""FedProx (Li et al. 2020, https://arxiv.org/abs/1812.06127): server.py (FedAvg's aggregation and the
options), client.py (the proximal term).
"""

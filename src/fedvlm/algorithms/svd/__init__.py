"""FlexLoRA (Bai et al. 2024, https://arxiv.org/abs/2402.11505), ``federated.aggregation=svd``:
server.py (exact dW, truncated SVD, error feedback).
"""

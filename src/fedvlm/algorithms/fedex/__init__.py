"""FedEx-LoRA (Singhal et al. 2024, https://arxiv.org/abs/2410.09432): server.py (averaged factors
and the exact residual merged into the base); its client side is FLoRA's (flora/client.py).
"""

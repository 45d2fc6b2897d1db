"""FLoRA (Wang et al. 2024, https://arxiv.org/abs/2409.05976): server.py (stacked factors merged
into the base), client.py (the node's base weights absorbing them; FedEx-LoRA's too).
"""

"""FedALT (Bian et al. 2025, https://arxiv.org/abs/2503.11880): server.py (leave-one-out rest of
world, the options), client.py (training with the rest of world frozen, what the client
keeps), layers.py (the own + rest-of-world LoRA with its mixer), export.py (a client's
personalized model as a directory).
"""

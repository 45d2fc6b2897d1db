"""SCAFFOLD (Karimireddy et al. 2020, https://arxiv.org/abs/1910.06378): server.py (x and c),
client.py (corrected steps and the client's c_i).
"""

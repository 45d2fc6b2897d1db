"""FedYogi (Reddi et al. 2021, https://arxiv.org/abs/2003.00295): Yogi on the server, in server.py.
"""

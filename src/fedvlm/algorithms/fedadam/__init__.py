"""FedAdam (Reddi et al. 2021, https://arxiv.org/abs/2003.00295): Adam on the server, in server.py.
"""

"""FedAvg (McMahan et al. 2017, https://arxiv.org/abs/1602.05629): the server side in server.py.
"""

"""Server strategies, one algorithm per file."""

from fedvlm.core.strategies.fedavg import FedAvg

STRATEGIES = {"fedavg": FedAvg}

"""Server strategies, one algorithm per file."""

from fedvlm.core.strategies.fedadagrad import FedAdagrad
from fedvlm.core.strategies.fedadam import FedAdam
from fedvlm.core.strategies.fedavg import FedAvg
from fedvlm.core.strategies.fedavgm import FedAvgM
from fedvlm.core.strategies.fedyogi import FedYogi

STRATEGIES = {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}

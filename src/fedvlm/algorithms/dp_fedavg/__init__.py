"""DP-FedAvg (McMahan et al. 2018, https://arxiv.org/abs/1710.06963) with adaptive clipping
(Andrew et al. 2021, https://arxiv.org/abs/1905.03871), ``federated.privacy=dp_fedavg``:
server.py (the mechanism, around the run's strategy; options ``dp_*``) and accountant.py
(epsilon from Google's ``dp-accounting``)."""

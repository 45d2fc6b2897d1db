"""Every random stream of a run, named once.

A stream's seed is the sequence ``[run seed, stream, *ids]`` (numpy's ``SeedSequence``
entropy): streams never collide across run seeds, as ``seed + k`` would (seed 0's stream 1
is seed 1's stream 0). The partition alone takes the bare run seed (flwr-datasets'
partitioners take an integer).

Each stream is drawn for a fixed number of ids (`IDS`): numpy reads ``[s, k]`` and
``[s, k, 0]`` as the same entropy, so one stream drawn with and without a trailing id would
repeat itself; `seed_for` refuses a wrong count.
"""

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """The run's RNG streams and the ids each is drawn for (values are part of every saved
    run's reproducibility: never renumber one)."""

    SUBSAMPLE = 1  # data.max_train_examples: which training rows the run keeps
    POOLED_TEST = 2  # data.pooled_test_size: which test rows the global evaluation uses
    BATCHES = 3  # (client): the order a client reads its rows, epoch after epoch
    TRAINING = 4  # (client, round): torch's RNG during a client's local training (dropout)
    SAMPLING = 5  # which clients take part in each round
    CENTRALIZED = 6  # the centralized baseline's batches and torch RNG
    LOCAL_ONLY = 7  # (client): the local-only baseline's
    COMPRESSION = 8  # (client, round): stochastic rounding of the uplink
    FLORA_REINIT = 9  # (round): FLoRA's fresh LoRA after each merge
    LOCAL_TEST = 10  # (client): which of a client's rows it holds out as its local test
    FAULTS = 11  # (round): which clients commit an injected fault (federated.faults)
    ATTACKS = 12  # (round): which clients attack (federated.attacks)
    ATTACK_NOISE = 13  # (client, round): a noise attacker's noise
    DP_NOISE = 14  # (round): DP-FedAvg's Gaussian noise and its noised clipped count
    DP_SGD_BATCHES = 15  # (client): DP-SGD's Poisson batches (the step is appended)
    DP_SGD_NOISE = 16  # (client, round): DP-SGD's gradient noise
    FEDALT_MIXER = 17  # (client): FedALT's fresh mixer (nn.Linear's default initialization)
    DP_CLIENT_NOISE = 18  # (client, round): distributed DP-FedAvg's share of the noise, added by the client
    VALIDATION = 19  # data.validation_size: which training rows are held out to evaluate on


IDS = {  # what each stream is drawn for
    Stream.SUBSAMPLE: (),
    Stream.POOLED_TEST: (),
    Stream.BATCHES: ("client",),  # (the epoch is appended by fedvlm.train.batches)
    Stream.TRAINING: ("client", "round"),
    Stream.SAMPLING: (),
    Stream.CENTRALIZED: (),
    Stream.LOCAL_ONLY: ("client",),
    Stream.COMPRESSION: ("client", "round"),
    Stream.FLORA_REINIT: ("round",),
    Stream.LOCAL_TEST: ("client",),
    Stream.FAULTS: ("round",),
    Stream.ATTACKS: ("round",),
    Stream.ATTACK_NOISE: ("client", "round"),
    Stream.DP_NOISE: ("round",),
    Stream.DP_SGD_BATCHES: ("client",),
    Stream.DP_SGD_NOISE: ("client", "round"),
    Stream.FEDALT_MIXER: ("client",),
    Stream.DP_CLIENT_NOISE: ("client", "round"),
    Stream.VALIDATION: (),
}


def seed_for(run_seed: int, stream: Stream, *ids: int) -> list[int]:
    """The seed sequence of ``stream`` for ``ids`` (`IDS` says which) in the run seeded
    ``run_seed``."""
    if len(ids) != len(IDS[stream]):
        raise ValueError(f"seed stream {stream.name} is drawn for {IDS[stream] or 'no ids'}, got {ids}")
    return [run_seed, int(stream), *ids]


def torch_seed(seed: list[int]) -> int:
    """One integer for ``torch.manual_seed`` from a seed sequence (`seed_for`)."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])

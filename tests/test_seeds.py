"""Every RNG stream of a run is named once (fedvlm.seeds) and no two collide."""

import itertools

import numpy as np

import pytest

from fedvlm.seeds import IDS, Stream, seed_for, torch_seed


def test_streams_have_distinct_numbers_and_say_what_they_are_drawn_for():
    assert len({int(s) for s in Stream}) == len(Stream)
    assert set(IDS) == set(Stream)
    with pytest.raises(ValueError, match="BATCHES is drawn for"):
        seed_for(0, Stream.BATCHES)  # [0, 3] would be client 0's [0, 3, 0] to numpy


def test_no_two_streams_ids_or_run_seeds_draw_the_same_numbers():
    # every stream for run seeds 0..3 and ids 0..2 (client and round alike): all first draws
    # differ, including seed 0's stream 2 against seed 1's stream 1 (where seed + k collides)
    sequences = [
        seed_for(seed, stream, *ids)
        for seed in range(4)
        for stream in Stream
        for ids in itertools.product(range(3), repeat=len(IDS[stream]))
    ]
    draws = {tuple(np.random.default_rng(s).integers(0, 2**63, size=2)) for s in sequences}
    assert len(draws) == len(sequences)
    assert len({torch_seed(s) for s in sequences}) == len(sequences)


def test_a_streams_seed_is_the_run_seed_the_stream_and_its_ids():
    # the layout saved runs were made with: changing it would change every run's numbers
    assert seed_for(7, Stream.BATCHES, 2) == [7, 3, 2]
    assert seed_for(0, Stream.SAMPLING) == [0, 5]

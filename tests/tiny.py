"""Shared settings for tests that run real jobs on the embedded model."""

import os

# A small federated job on the embedded model: 2 clients, 2 rounds, a few steps each.
TINY_RUN = [
    "run.progress=false",
    "run.baselines=[]",
    "data.max_train_examples=400",
    "data.pooled_test_size=24",
    "partition.num_clients=2",
    "partition.min_partition_size=5",
    "partition.max_local_test=8",
    "federated.rounds=2",
    "train.local_steps=2",
    "train.batch_size=8",
    "train.warmup_steps=1",
    "eval.batch_size=32",
]

# flower-sim: each virtual client reserves every CPU, so Ray starts one actor that serves
# every node in turn (one process importing torch instead of one per CPU). The tests of
# failures, timeouts and resume keep Ray's default of one actor per CPU.
ONE_ACTOR = f"run.flower_client_cpus={os.cpu_count()}"


def finished_run(root, name: str = "done"):
    """Run the tiny job to its end through the CLI in ``root``; return its run directory."""
    from fedvlm.cli import main

    assert main(["run", *TINY_RUN, f"run.output_dir={root}", f"run.name={name}"]) == 0
    return root / name

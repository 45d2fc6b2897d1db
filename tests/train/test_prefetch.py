"""Batches collated ahead of the step (a background thread, worker processes) are the ones
collated inside the step, in the same order; errors reach the loop; the wait is measured."""

import time

import pytest
import torch

from fedvlm.config import load_config
from fedvlm.engine.federation import build_federation
from fedvlm.train.batches import iter_steps
from fedvlm.train.prefetch import Loading, collated
from tiny import TINY_RUN


@pytest.fixture(scope="module")
def fed():
    return build_federation(load_config(None, TINY_RUN))


def _steps(fed, loading):
    client = fed.clients["0"]
    return list(iter_steps(fed.task, fed.train_ds, client.train, num_steps=5, batch_size=4, grad_accum=2,
                           first_step=3, seed=[0, 3, 0], loading=loading))


def _same(a, b):
    assert len(a) == len(b) == 5
    for step_a, step_b in zip(a, b):
        assert len(step_a) == len(step_b) == 2
        for batch_a, batch_b in zip(step_a, step_b):
            assert batch_a.keys() == batch_b.keys()
            for key in batch_a:
                assert batch_a[key].dtype == batch_b[key].dtype and torch.equal(batch_a[key], batch_b[key]), key


def test_a_background_thread_and_worker_processes_make_the_same_batches_in_order(fed):
    inline = _steps(fed, Loading(prefetch_factor=0))
    assert len({tuple(s[0]["input_ids"].flatten().tolist()) for s in inline}) == 5  # steps differ
    _same(inline, _steps(fed, Loading(num_workers=0, prefetch_factor=2)))
    _same(inline, _steps(fed, Loading(num_workers=2, prefetch_factor=1)))


class _Slow:
    """Items 0..n-1 that take ``delay`` seconds each to make; item ``fail`` raises."""

    def __init__(self, n, delay=0.0, fail=None):
        self.n, self.delay, self.fail, self.made = n, delay, fail, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail:
            raise ValueError(f"row {i} is bad")
        time.sleep(self.delay)
        self.made.append(i)
        return {"x": torch.tensor([i])}


def test_an_error_while_collating_ahead_is_raised_at_its_step():
    seen = []
    with pytest.raises(ValueError, match="row 3 is bad"):
        for item in collated(_Slow(6, fail=3), Loading(prefetch_factor=2)):
            seen.append(int(item["x"]))
    assert seen == [0, 1, 2]


def test_a_loop_that_stops_early_stops_the_thread_within_its_lookahead():
    items = _Slow(50, delay=0.01)
    stream = collated(items, Loading(prefetch_factor=2))
    assert [int(next(stream)["x"]) for _ in range(3)] == [0, 1, 2]
    stream.close()
    made = len(items.made)
    time.sleep(0.2)
    assert len(items.made) == made <= 3 + 2 + 1  # taken, queued, and the one in hand


def test_while_the_step_computes_the_next_batch_is_made():
    """Ten steps that each take 50 ms of compute over batches that take 50 ms to make:
    inline the loop waits for every batch; collated ahead only for the first."""

    def run(loading):
        waited = 0.0
        stream = collated(_Slow(10, delay=0.05), loading)
        while True:
            asked = time.perf_counter()
            item = next(stream, None)
            waited += time.perf_counter() - asked
            if item is None:
                return waited
            time.sleep(0.05)  # the step (sleep releases the GIL, as a GPU kernel wait does)

    inline, ahead = run(Loading(prefetch_factor=0)), run(Loading(prefetch_factor=2))
    assert inline > 0.45
    assert ahead < 0.25


def test_a_round_records_its_data_wait_and_evaluation_speed(tmp_path):
    import json

    from fedvlm.engine.simulate import run_simulation

    run_simulation(load_config(None, [*TINY_RUN, "federated.rounds=1"]), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for client in records[1]["clients"].values():
        assert 0 < client["data_seconds"] < client["seconds"]
    for record in records:
        speed = record["eval_speed"]
        assert speed["questions_per_second"] == pytest.approx(24 / speed["seconds"])

import numpy as np
import pytest

from fedvlm.core.aggregate import weighted_mean
from fedvlm.core.sampling import sample_clients
from fedvlm.algorithms.fedavg.server import FedAvg
from fedvlm.core.types import ClientUpdate
from fedvlm.core.validate import validate_update
from fedvlm.errors import UpdateError

KEY_A = "base_model.model.layers.0.q_proj.lora_A.weight"
KEY_P = "base_model.model.multi_modal_projector.linear_1.weight"


def test_weighted_mean_matches_hand_computation():
    # prepare: two clients with 1 and 3 examples -> weights 1/4 and 3/4
    s1 = {KEY_A: np.array([[1.0, 2.0]], dtype=np.float32), KEY_P: np.array([4.0], dtype=np.float32)}
    s2 = {KEY_A: np.array([[5.0, -2.0]], dtype=np.float32), KEY_P: np.array([0.0], dtype=np.float32)}
    # execute
    out = weighted_mean([s1, s2], [1, 3])
    # assert: 0.25*1+0.75*5 = 4, 0.25*2+0.75*(-2) = -1, 0.25*4 = 1
    np.testing.assert_array_equal(out[KEY_A], np.array([[4.0, -1.0]], dtype=np.float32))
    np.testing.assert_array_equal(out[KEY_P], np.array([1.0], dtype=np.float32))
    assert out[KEY_A].dtype == np.float32


def test_identical_clients_leave_state_unchanged():
    rng = np.random.default_rng(0)
    s = {KEY_A: rng.normal(size=(4, 8)).astype(np.float32)}
    out = weighted_mean([s, s, s], [10, 1, 7])
    np.testing.assert_allclose(out[KEY_A], s[KEY_A], rtol=0, atol=1e-7)


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1]])
def test_bad_weights_rejected(weights):
    s = {KEY_A: np.zeros(2, dtype=np.float32)}
    with pytest.raises(ValueError):
        weighted_mean([s] * max(1, len(weights)), weights)


def _two_updates():
    # client 0: training set of 30 rows, trained 8 examples this round; client 1: 10 rows, 24 examples
    return [
        ClientUpdate("0", {KEY_A: np.array([2.0, 0.0], dtype=np.float32)}, 30, metrics={"examples": 8}),
        ClientUpdate("1", {KEY_A: np.array([0.0, 4.0], dtype=np.float32)}, 10, metrics={"examples": 24}),
    ]


@pytest.mark.parametrize(
    "weighting,expected",
    [
        ("data_size", [1.5, 1.0]),  # p = 30/40, 10/40: 0.75 * 2, 0.25 * 4
        ("examples", [0.5, 3.0]),  # p = 8/32, 24/32: 0.25 * 2, 0.75 * 4
        ("uniform", [1.0, 2.0]),  # p = 1/2 each
    ],
)
@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"])
def test_every_strategy_weights_clients_as_configured(name, weighting, expected):
    from fedvlm.algorithms.fedavgm.server import FedAvgMOptions
    from fedvlm.algorithms.registry import STRATEGIES

    # Plain FedAvg steps: server lr 1, no momentum, moments that reduce to the mean.
    options = {"fedavgm": {"options": FedAvgMOptions(momentum=0.0)}, "scaffold": {"num_clients": 2}}.get(name, {})
    strategy = STRATEGIES[name].server(weighting=weighting, **options)
    state = strategy.initialize({KEY_A: np.zeros(2, dtype=np.float32)})
    updates = _two_updates()
    if name == "scaffold":
        for u in updates:
            u.extras["dc"] = {KEY_A: np.zeros(2, dtype=np.float32)}
    new = strategy.aggregate(1, state, updates)
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        # one adaptive step from zero moments moves each coordinate along the weighted mean's sign
        assert np.sign(new.global_state[KEY_A]).tolist() == np.sign(expected).tolist()
        return
    np.testing.assert_allclose(new.global_state[KEY_A], expected, rtol=1e-6)


def test_client_weights_default_is_the_training_set_size():
    from fedvlm.core.aggregate import client_weights

    assert client_weights(_two_updates()) == [30.0, 10.0]
    with pytest.raises(ValueError, match="unknown weighting"):
        client_weights(_two_updates(), "size")


@pytest.mark.parametrize("fraction,min_clients,expected", [(1.0, 1, 10), (0.3, 1, 3), (0.05, 2, 2), (0.5, 20, 10)])
def test_sample_clients_count_and_determinism(fraction, min_clients, expected):
    ids = [str(i) for i in range(10)]
    a = sample_clients(ids, fraction, min_clients, np.random.default_rng(3))
    b = sample_clients(ids, fraction, min_clients, np.random.default_rng(3))
    assert a == b and len(a) == expected == len(set(a))
    assert a == sorted(a, key=ids.index)


def test_sampling_varies_across_rounds():
    ids = [str(i) for i in range(20)]
    rng = np.random.default_rng(0)
    draws = {tuple(sample_clients(ids, 0.25, 1, rng)) for _ in range(10)}
    assert len(draws) > 1


def test_configure_broadcasts_global_state_to_sampled_clients():
    strategy = FedAvg(fraction=0.5)
    state = strategy.initialize({KEY_A: np.ones(3, dtype=np.float32)})
    ins = strategy.configure(1, state, ["0", "1", "2", "3"], np.random.default_rng(0))
    assert len(ins) == 2
    assert all(i.payload is state.global_state for i in ins.values())


@pytest.mark.parametrize(
    "state,num,match",
    [
        ({}, 5, "missing"),
        ({KEY_A: np.zeros((2, 3), dtype=np.float32)}, 5, "shape"),
        ({KEY_A: np.full((2, 2), np.nan, dtype=np.float32)}, 5, "NaN"),
        ({KEY_A: np.zeros((2, 2), dtype=np.float64)}, 5, "float64"),
        ({KEY_A: np.zeros((2, 2), dtype=np.float32)}, 0, "num_examples"),
    ],
)
def test_validate_update_names_client_and_problem(state, num, match):
    ref = {KEY_A: np.zeros((2, 2), dtype=np.float32)}
    with pytest.raises(UpdateError, match=match) as err:
        validate_update(ClientUpdate("client-7", state, num), ref)
    assert "client-7" in str(err.value)


def test_validate_update_checks_the_extras_a_strategy_expects():
    ref = {KEY_A: np.zeros((2, 2), dtype=np.float32)}
    count = {"visits": np.zeros(1, dtype=np.float32)}
    ok = ClientUpdate("3", dict(ref), 1, extras={"toy": {"visits": np.ones(1, dtype=np.float32)}})
    validate_update(ok, ref, {"toy": count})
    with pytest.raises(UpdateError, match=r"client 3: extras groups \['toy'\], expected \['dc'\]"):
        validate_update(ok, ref, {"dc": ref})
    bad = ClientUpdate("3", dict(ref), 1, extras={"toy": {"visits": np.full(1, np.nan, dtype=np.float32)}})
    with pytest.raises(UpdateError, match=r"extras\[toy\] visits contains NaN"):
        validate_update(bad, ref, {"toy": count})
    # without a declaration every group must look like the adapter (SCAFFOLD's dc)
    with pytest.raises(UpdateError, match=r"extras\[toy\] keys differ"):
        validate_update(ok, ref)

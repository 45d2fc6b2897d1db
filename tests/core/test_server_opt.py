import numpy as np
import pytest

from fedvlm.core.server_opt import server_step
from fedvlm.algorithms.fedadagrad.server import FedAdagrad, FedAdagradOptions
from fedvlm.algorithms.fedadam.server import FedAdam, FedAdamOptions
from fedvlm.algorithms.fedavgm.server import FedAvgM, FedAvgMOptions
from fedvlm.algorithms.fedyogi.server import FedYogi, FedYogiOptions
from fedvlm.algorithms.registry import STRATEGIES
from fedvlm.core.types import ClientUpdate

KEY = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
KEY_P = "base_model.model.model.multi_modal_projector.linear_1.weight"


def _state(values):
    return {KEY: np.array(values, dtype=np.float64)}


def _round(strategy, state, client_values, num_examples):
    updates = [
        ClientUpdate(str(i), _state(v), n)
        for i, (v, n) in enumerate(zip(client_values, num_examples))
    ]
    return strategy.aggregate(state.round + 1, state, updates)


def test_fedavgm_two_rounds_match_hand_computation():
    # prepare: x0 = [1, 2], lr 0.5, momentum 0.9
    strategy = FedAvgM(options=FedAvgMOptions(server_lr=0.5, momentum=0.9))
    s0 = strategy.initialize(_state([1.0, 2.0]))
    # execute round 1: mean = 0.25*[2, 2] + 0.75*[4, 0] = [3.5, 0.5]; Delta = [2.5, -1.5]
    # v1 = Delta = [2.5, -1.5]; x1 = [1 + 0.5*2.5, 2 - 0.5*1.5] = [2.25, 1.25]
    s1 = _round(strategy, s0, [[2.0, 2.0], [4.0, 0.0]], [1, 3])
    # round 2: one client at x1 + [1, 0] -> Delta = [1, 0]
    # v2 = 0.9*[2.5, -1.5] + [1, 0] = [3.25, -1.35]; x2 = [2.25 + 1.625, 1.25 - 0.675]
    s2 = _round(strategy, s1, [[3.25, 1.25]], [5])
    # assert
    np.testing.assert_allclose(s1.global_state[KEY], [2.25, 1.25], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s1.buffers["v"][KEY], [2.5, -1.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.buffers["v"][KEY], [3.25, -1.35], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.global_state[KEY], [3.875, 0.575], rtol=0, atol=1e-12)
    assert s2.round == 2


# Shared two-round scenario for the adaptive optimizers: x0 = [0, 0], lr 1, b1 0.9,
# b2 0.99, tau 0.1. Round 1: clients [2.5, -2] (1 example) and [0.5, -2] (3 examples) ->
# mean [1, -2] = Delta1. m1 = 0.1*Delta1 = [0.1, -0.2]. Round 2: Delta2 = [1, 0], so
# m2 = 0.9*m1 + 0.1*[1, 0] = [0.19, -0.18].
ADAPTIVE = dict(server_lr=1.0, beta1=0.9, tau=0.1)
M1, M2 = np.array([0.1, -0.2]), np.array([0.19, -0.18])


def _two_adaptive_rounds(strategy):
    s0 = strategy.initialize(_state([0.0, 0.0]))
    s1 = _round(strategy, s0, [[2.5, -2.0], [0.5, -2.0]], [1, 3])
    x1 = s1.global_state[KEY]
    s2 = _round(strategy, s1, [x1 + np.array([1.0, 0.0])], [1])
    return s1, s2


def test_fedadam_two_rounds_match_hand_computation():
    s1, s2 = _two_adaptive_rounds(FedAdam(options=FedAdamOptions(beta2=0.99, **ADAPTIVE)))
    # v1 = 0.01*[1, 4] = [0.01, 0.04]; x1 = [0.1/(0.1+0.1), -0.2/(0.2+0.1)] = [0.5, -2/3]
    # v2 = 0.99*v1 + 0.01*[1, 0] = [0.0199, 0.0396]
    v2 = np.array([0.0199, 0.0396])
    x1 = np.array([0.5, -2 / 3])
    np.testing.assert_allclose(s1.global_state[KEY], x1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s1.buffers["m"][KEY], M1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s1.buffers["v"][KEY], [0.01, 0.04], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.buffers["m"][KEY], M2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.buffers["v"][KEY], v2, rtol=0, atol=1e-12)
    expected = x1 + M2 / (np.sqrt(v2) + 0.1)
    np.testing.assert_allclose(s2.global_state[KEY], expected, rtol=0, atol=1e-12)


def test_fedyogi_two_rounds_match_hand_computation():
    s1, s2 = _two_adaptive_rounds(FedYogi(options=FedYogiOptions(beta2=0.99, **ADAPTIVE)))
    # v1 = 0 - 0.01*[1, 4]*sign(0 - [1, 4]) = [0.01, 0.04] (first step equals Adam's)
    # v2 = v1 - 0.01*[1, 0]*sign(v1 - [1, 0]) = [0.01 + 0.01, 0.04 - 0] = [0.02, 0.04]
    # x2 = x1 + [0.19/(sqrt(0.02)+0.1), -0.18/(0.2+0.1)] = x1 + [.., -0.6]
    x1 = np.array([0.5, -2 / 3])
    np.testing.assert_allclose(s1.global_state[KEY], x1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.buffers["v"][KEY], [0.02, 0.04], rtol=0, atol=1e-12)
    expected = x1 + np.array([0.19 / (np.sqrt(0.02) + 0.1), -0.6])
    np.testing.assert_allclose(s2.global_state[KEY], expected, rtol=0, atol=1e-12)


def test_fedadagrad_two_rounds_match_hand_computation():
    s1, s2 = _two_adaptive_rounds(FedAdagrad(options=FedAdagradOptions(**ADAPTIVE)))
    # v1 = [1, 4]; x1 = [0.1/(1+0.1), -0.2/(2+0.1)]
    # v2 = v1 + [1, 0] = [2, 4]; x2 = x1 + [0.19/(sqrt(2)+0.1), -0.18/2.1]
    x1 = np.array([0.1 / 1.1, -0.2 / 2.1])
    np.testing.assert_allclose(s1.global_state[KEY], x1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s2.buffers["v"][KEY], [2.0, 4.0], rtol=0, atol=1e-12)
    expected = x1 + np.array([0.19 / (np.sqrt(2.0) + 0.1), -0.18 / 2.1])
    np.testing.assert_allclose(s2.global_state[KEY], expected, rtol=0, atol=1e-12)


def test_v_init_tau_squared_changes_yogi_first_step():
    # prepare: v0 = tau^2 = 0.01, Delta = [1, -2] -> Delta^2 = [1, 4] > v0
    strategy = FedYogi(v_init=0.01, options=FedYogiOptions(beta2=0.99, **ADAPTIVE))
    s0 = strategy.initialize(_state([0.0, 0.0]))
    # execute
    s1 = _round(strategy, s0, [[1.0, -2.0]], [1])
    # assert: v1 = 0.01 + 0.01*[1, 4] = [0.02, 0.05]
    np.testing.assert_allclose(s0.buffers["v"][KEY], [0.01, 0.01])
    np.testing.assert_allclose(s1.buffers["v"][KEY], [0.02, 0.05], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_identical_clients_returning_global_leave_adapter_unchanged(name):
    # prepare: clients send back exactly the global adapter -> Delta = 0
    rng = np.random.default_rng(0)
    initial = {
        KEY: rng.normal(size=(4, 8)).astype(np.float32),
        KEY_P: rng.normal(size=(8,)).astype(np.float32),
    }
    strategy = STRATEGIES[name].server()
    state = strategy.initialize(initial)
    for round_num in (1, 2):
        updates = [
            ClientUpdate(str(i), dict(state.global_state), n) for i, n in enumerate([3, 1, 7])
        ]
        # execute
        state = strategy.aggregate(round_num, state, updates)
        # assert
        for k, a in initial.items():
            np.testing.assert_array_equal(state.global_state[k], a)
            assert state.global_state[k].dtype == np.float32
            assert state.buffers["v"][k].dtype == np.float32


def test_steps_do_not_mutate_inputs():
    x, delta = _state([1.0, 2.0]), _state([0.5, -0.5])
    m, v = _state([0.1, 0.2]), _state([0.3, 0.4])
    copies = [{k: a.copy() for k, a in d.items()} for d in (x, delta, m, v)]
    for rule in ("momentum", "adam", "yogi", "adagrad"):
        server_step(rule, x, delta, {"m": m, "v": v}, lr=1.0, momentum=0.9, beta1=0.9, beta2=0.99, tau=1e-3)
    for original, copy in zip((x, delta, m, v), copies):
        np.testing.assert_array_equal(original[KEY], copy[KEY])


def test_momentum_one_lr_zero_momentum_is_fedavg():
    # with lr 1 and momentum 0 the new state is the weighted mean itself
    strategy = FedAvgM(options=FedAvgMOptions(server_lr=1.0, momentum=0.0))
    s0 = strategy.initialize(_state([0.0, 0.0]))
    s1 = _round(strategy, s0, [[2.0, 0.0], [0.0, 4.0]], [30, 10])
    np.testing.assert_allclose(s1.global_state[KEY], [1.5, 1.0])


def test_mismatched_moment_keys_rejected():
    with pytest.raises(ValueError, match="missing"):
        server_step(
            "adam", _state([1.0]), _state([1.0]), {"m": {}, "v": _state([0.0])}, lr=1, beta1=0.9, beta2=0.99, tau=1e-3
        )


def test_registry_names():
    assert {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"} <= set(STRATEGIES)
    assert STRATEGIES["fedyogi"].server is FedYogi


def test_server_optimizers_default_to_flowers_published_settings():
    """Each adaptive optimizer's defaults are those of Flower's own strategy (its eta,
    beta_1, beta_2, tau); FedAdagrad has no momentum there (beta1 0)."""
    import inspect

    from flwr.serverapp import strategy as flower

    from fedvlm.algorithms.fedadagrad.server import FedAdagradOptions
    from fedvlm.algorithms.fedadam.server import FedAdamOptions
    from fedvlm.algorithms.fedyogi.server import FedYogiOptions

    def defaults(cls):
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()}

    for ours, theirs in ((FedAdamOptions(), flower.FedAdam), (FedYogiOptions(), flower.FedYogi)):
        d = defaults(theirs)
        assert (ours.server_lr, ours.beta1, ours.beta2, ours.tau) == (d["eta"], d["beta_1"], d["beta_2"], d["tau"])
    d = defaults(flower.FedAdagrad)
    ours = FedAdagradOptions()
    assert (ours.server_lr, ours.tau, ours.beta1) == (d["eta"], d["tau"], 0.0)

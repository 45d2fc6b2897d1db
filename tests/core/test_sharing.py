import numpy as np
import pytest

from fedvlm.core.lora import dense_delta, pad_rank
from fedvlm.core.sharing import SharingPlan, key_part
from fedvlm.algorithms.fedavg.server import FedAvg
from fedvlm.algorithms.registry import VARIANTS
from fedvlm.algorithms.svd.server import FlexLoRA, FlexLoRAOptions
from fedvlm.core.types import ClientUpdate

A, B, P = "m.q.lora_A.weight", "m.q.lora_B.weight", "m.proj.weight"


def _state(rng, r=2):
    return {A: rng.normal(size=(r, 5)).astype(np.float32), B: rng.normal(size=(4, r)).astype(np.float32),
            P: rng.normal(size=(3,)).astype(np.float32)}


C, H = "m.multi_modal_projector.linear.weight", "m.classifier.weight"
KEYS = [A, B, C, H]


@pytest.mark.parametrize(
    "aggregation, tuning, trained, exchanged",
    [
        ("naive", "connector_lora", [A, B, C, H], [A, B, C, H]),
        ("svd", "lora", [A, B, H], [A, B, H]),
        ("naive", "connector", [C, H], [C, H]),
        ("ffa", "connector_lora", [B, C, H], [B, C, H]),
        ("ffa", "lora", [B, H], [B, H]),
        ("fedsa", "connector_lora", [A, B, C, H], [A, C, H]),
        ("fedsa", "lora", [A, B, H], [A, H]),
        ("flora", "lora", [A, B, H], [A, B, H]),
    ],
)
def test_sharing_plan_trains_and_exchanges(aggregation, tuning, trained, exchanged):
    variant = VARIANTS[aggregation]
    plan = SharingPlan(tuning, connector=("multi_modal_projector",), frozen=variant.frozen, local=variant.local)
    for round_num in (1, 5):
        assert plan.trained(KEYS, round_num) == trained
        assert plan.exchanged(KEYS, round_num) == exchanged
        assert not plan.starts_stage(round_num)


def test_two_stage_plan_switches_from_connector_to_lora():
    plan = SharingPlan("two_stage", two_stage_rounds=2, connector=("multi_modal_projector",))
    assert [plan.exchanged(KEYS, r) for r in (1, 2, 3, 4)] == [[C, H], [C, H], [A, B, H], [A, B, H]]
    assert [plan.starts_stage(r) for r in (1, 2, 3, 4)] == [False, False, True, False]


def test_key_parts():
    assert [key_part(k, ("multi_modal_projector",)) for k in KEYS] == ["lora", "lora", "connector", "module"]
    assert key_part(C, ()) == "module"  # no connector named: a module trained in full


def test_unknown_tuning():
    with pytest.raises(ValueError, match="auto"):
        SharingPlan("auto")


def test_pad_rank_keeps_product():
    state = _state(np.random.default_rng(1), r=2)
    padded = pad_rank(state, 5)
    assert padded[A].shape == (5, 5) and padded[B].shape == (4, 5)
    np.testing.assert_allclose(padded[B] @ padded[A], state[B] @ state[A], atol=1e-6)


def test_fedavg_svd_is_exact_at_full_rank_and_identical_clients_keep_dw():
    rng = np.random.default_rng(2)
    s1, s2 = _state(rng), _state(rng)
    s2[A] = s1[A].copy()  # a shared A keeps the mean dW at rank 2: full rank for the server
    strategy = FlexLoRA(lora_scaling=2.0)
    state = strategy.initialize(s1)
    out = strategy.aggregate(1, state, [ClientUpdate("0", s1, 1), ClientUpdate("1", s2, 3)])
    want = 0.25 * dense_delta(s1, 2.0)["m.q"] + 0.75 * dense_delta(s2, 2.0)["m.q"]
    got = dense_delta(out.global_state, 2.0)["m.q"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert out.scalars["truncation_error"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(out.global_state[P], 0.25 * s1[P] + 0.75 * s2[P], atol=1e-6)
    # identical clients at the clients' rank: the product B A is unchanged
    same = FlexLoRA(lora_scaling=2.0).aggregate(1, state, [ClientUpdate("0", s1, 2), ClientUpdate("1", s1, 5)])
    np.testing.assert_allclose(dense_delta(same.global_state, 2.0)["m.q"], dense_delta(s1, 2.0)["m.q"], atol=1e-5)


def test_fedavg_svd_truncation_pads_to_client_rank_and_feeds_back_error():
    rng = np.random.default_rng(3)
    s1, s2 = _state(rng), _state(rng)
    strategy = FlexLoRA(lora_scaling=1.0, options=FlexLoRAOptions(server_rank=1, error_feedback=True))
    state = strategy.aggregate(1, strategy.initialize(s1), [ClientUpdate("0", s1, 1), ClientUpdate("1", s2, 1)])
    assert state.global_state[A].shape == s1[A].shape  # padded back to rank 2
    # the component past the server rank restarts from the initialization: A's row as the
    # state the strategy was initialized with, B's column zero (so dW is the truncated one)
    np.testing.assert_array_equal(state.global_state[A][1], s1[A][1])
    assert np.all(state.global_state[B][:, 1] == 0)
    assert state.scalars["truncation_error"] > 0
    assert "svd_residual" in state.buffers and state.buffers["svd_residual"]
    # kept + residual = the exact mean dW
    kept = dense_delta(state.global_state, 1.0)["m.q"]
    tail = dense_delta(state.buffers["svd_residual"], 1.0)["m.q"]
    want = 0.5 * (s1[B] @ s1[A] + s2[B] @ s2[A])
    np.testing.assert_allclose(kept + tail, want, atol=1e-5)


def test_planned_strategy_restarts_on_a_new_stage_and_sends_the_frozen_connector():
    from fedvlm.core.sharing import PlannedStrategy

    initial = {A: np.full((2, 5), 0.1, np.float32), B: np.zeros((4, 2), np.float32),
               C: np.zeros(3, np.float32), H: np.zeros(2, np.float32)}
    plan = SharingPlan("two_stage", two_stage_rounds=1, connector=("multi_modal_projector",))
    server = PlannedStrategy(FedAvg(), plan, initial)
    state = server.initialize()
    assert sorted(state.global_state) == sorted([C, H])  # stage 1: connector and head only
    # clients of sizes 1 and 3 send connectors of 4 and 8: weighted mean 7
    updates = [ClientUpdate(str(k), {C: np.full(3, v, np.float32), H: np.ones(2, np.float32)}, n)
               for k, (v, n) in enumerate([(4.0, 1), (8.0, 3)])]
    state = server.aggregate(1, state, updates)
    assert server.begin_round(1, state) is state
    stage_two = server.begin_round(2, state)
    assert sorted(stage_two.global_state) == sorted([A, B, H])
    assert stage_two.global_state[H].tolist() == [1.0, 1.0]  # carried on from stage 1
    assert stage_two.global_state[A].tolist() == initial[A].tolist()  # LoRA from its init
    assert stage_two.buffers["frozen"][C].tolist() == [7.0, 7.0, 7.0]
    sent = server.configure(2, stage_two, ["0", "1"], np.random.default_rng(0))
    assert all(ins.payload[C].tolist() == [7.0, 7.0, 7.0] and A in ins.payload for ins in sent.values())

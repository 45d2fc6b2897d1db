"""DP-FedAvg against its formulas: each update clipped to C, the fixed-denominator mean,
Gaussian noise of standard deviation z C / (q N), adaptive clipping tracking a quantile;
epsilon as Google's dp-accounting computes it; what it refuses, in one line each."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedvlm.algorithms.dp_fedavg.accountant import epsilon, noise_for
from fedvlm.algorithms.dp_fedavg.server import CLIP, DPFedAvg, DPFedAvgOptions, split_noise
from fedvlm.algorithms.fedavg.server import FedAvg
from fedvlm.config import load_config
from fedvlm.core.types import ClientUpdate
from fedvlm.errors import ConfigError
from tiny import ONE_ACTOR, TINY_RUN

DP = ["federated.privacy=dp_fedavg", "federated.weighting=uniform"]


def _dp(z=1.0, clip=1.0, n=2, fraction=1.0, **options):
    inner = FedAvg(weighting="uniform")
    return DPFedAvg(inner, n, DPFedAvgOptions(dp_noise_multiplier=z, dp_clip=clip, **options), z, fraction, seed=3)


def test_each_update_is_clipped_to_C_and_summed_over_the_expected_clients():
    dp = _dp(z=1.0, clip=1.0, n=2)
    state = dp.initialize({"w": np.zeros(2, np.float32)})
    big = ClientUpdate("0", {"w": np.array([3.0, 4.0], np.float32)}, 10)  # norm 5: scaled to norm 1
    small = ClientUpdate("1", {"w": np.array([0.3, 0.4], np.float32)}, 99)  # norm 0.5: kept
    with_updates = dp.aggregate(1, state, [big, small]).global_state["w"]
    noise_only = dp.aggregate(1, state, []).global_state["w"]  # the same round draws the same noise
    # (0.6, 0.8) + (0.3, 0.4), over q N = 2 clients; the data sizes 10 and 99 do not weigh
    np.testing.assert_allclose(with_updates - noise_only, [0.45, 0.6], atol=1e-6)
    assert dp.aggregate(1, state, [big, small]).scalars["dp_clipped"] == 1


def test_the_noise_has_standard_deviation_z_C_over_q_N():
    dp = _dp(z=2.0, clip=0.5, n=8, fraction=0.5)  # q N = 4: std 2 * 0.5 / 4 = 0.25
    state = dp.initialize({"w": np.zeros(200_000, np.float32)})
    noise = dp.aggregate(1, state, []).global_state["w"]
    assert abs(noise.std() - 0.25) < 0.0025 and abs(noise.mean()) < 0.0025


def test_poisson_sampling_keeps_each_client_with_probability_q():
    dp = _dp(n=1000, fraction=0.3)
    state = dp.initialize({"w": np.zeros(1, np.float32)})
    picked = dp.configure(1, state, [str(i) for i in range(1000)], np.random.default_rng(0))
    assert 250 < len(picked) < 350  # Binomial(1000, 0.3): mean 300, sd 14.5
    assert list(picked) == sorted(picked, key=int)  # the run's client order


def test_adaptive_clipping_tracks_the_target_quantile_of_the_update_norms():
    """Norms drawn from a log-normal: C should settle near their median (gamma 0.5) and
    near their 80th percentile for gamma 0.8 (Andrew et al. 2021)."""
    rng = np.random.default_rng(1)
    for gamma, truth in ((0.5, 1.0), (0.8, float(np.exp(0.5 * 0.8416)))):  # lognormal(0, 0.5) quantiles
        dp = _dp(z=1.0, clip=0.1, n=500, dp_adaptive_clip=True, dp_target_quantile=gamma)
        state = dp.initialize({"w": np.zeros(1, np.float32)})
        clips = []
        for r in range(1, 301):
            norms = rng.lognormal(0.0, 0.5, size=500)
            updates = [ClientUpdate(str(i), {"w": np.array([n], np.float32)}, 1) for i, n in enumerate(norms)]
            state = dp.aggregate(r, state, updates)
            state = type(state)(state.round, {"w": np.zeros(1, np.float32)}, state.buffers, state.scalars)
            clips.append(state.scalars[CLIP])
        settled = float(np.mean(clips[-100:]))
        assert abs(settled / truth - 1) < 0.1, (gamma, settled, truth)
        assert clips[0] < 0.15  # it started from dp_clip 0.1


def test_the_total_noise_is_split_between_count_and_update():
    # z^-2 = z_update^-2 + (2 sigma_b)^-2
    assert split_noise(1.0, 1.0) == pytest.approx((1 - 0.25) ** -0.5)
    with pytest.raises(ValueError, match="no noise budget"):
        split_noise(1.0, 0.5)


def test_epsilon_is_the_librarys_own():
    import dp_accounting
    from dp_accounting import pld, rdp

    for q, z, rounds in ((1.0, 1.1, 10), (0.25, 0.8, 40)):
        event = dp_accounting.GaussianDpEvent(z)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        for kind, accountant in (("rdp", rdp.RdpAccountant()), ("pld", pld.PLDAccountant())):
            accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
            assert epsilon(z, q, rounds, 1e-5, kind) == accountant.get_epsilon(1e-5)
    # the calibrated noise reaches the target, and a little less noise would not
    z = noise_for(4.0, 0.5, 20, 1e-5)
    assert epsilon(z, 0.5, 20, 1e-5) <= 4.0 < epsilon(0.98 * z, 0.5, 20, 1e-5)

def test_epsilon_of_the_gaussian_mechanism_by_hand():
    """No sampling (q = 1): T rounds at z are one Gaussian mechanism at z / sqrt(T). PLD is
    exact: the analytic Gaussian's delta(eps) = Phi(-eps s + 1/(2s)) - e^eps Phi(-eps s - 1/(2s))
    (Balle & Wang 2018) solved for delta 1e-5; RDP is alpha T / (2 z^2) converted with
    log1p(-1/alpha) - (log delta + log alpha) / (alpha - 1), minimized over alpha."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    for z, rounds in ((1.0, 1), (2.0, 4), (3.0, 1)):
        s = z / np.sqrt(rounds)
        exact = brentq(lambda e: norm.cdf(-e * s + 1 / (2 * s)) - np.exp(e) * norm.cdf(-e * s - 1 / (2 * s)) - 1e-5, 1e-3, 50)
        assert epsilon(z, 1.0, rounds, 1e-5, "pld") == pytest.approx(exact, abs=1e-4)
        alpha = np.linspace(1.01, 300, 300_000)
        by_rdp = np.min(rounds * alpha / (2 * z * z) + np.log1p(-1 / alpha) - (np.log(1e-5) + np.log(alpha)) / (alpha - 1))
        assert epsilon(z, 1.0, rounds, 1e-5, "rdp") == pytest.approx(by_rdp, abs=2e-3)
    assert epsilon(1.0, 1.0, 1, 1e-5, "pld") == pytest.approx(4.3772, abs=1e-3)


def test_a_private_run_records_epsilon_each_round_and_resumes_exactly(tmp_path):
    from fedvlm.cli import main

    job = [*TINY_RUN, *DP, "partition.num_clients=4", "federated.fraction=0.5", "federated.dp_noise_multiplier=1.5",
           "federated.dp_adaptive_clip=true", "federated.dp_clipped_count_stddev=1.0", f"run.output_dir={tmp_path}"]
    assert main(["run", *job, "run.name=whole"]) == 0
    assert main(["run", *job, "federated.rounds=1", "run.name=split"]) == 0
    assert main(["run", "--resume", str(tmp_path / "split"), "federated.rounds=2"]) == 0
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    for r in records[1:]:
        p = r["privacy"]
        assert p["epsilon"] == pytest.approx(epsilon(1.5, 0.5, r["round"], 1e-5))
        assert p["noise_multiplier"] == 1.5 and p["sampled"] == len(r["clients"]) + len(r.get("failed", {}))
    assert records[1]["privacy"]["clip"] == 0.1 and records[2]["privacy"]["clip"] != 0.1  # C moved
    final = "adapters/final/adapter_model.safetensors"
    a, b = load_file(str(tmp_path / "whole" / final)), load_file(str(tmp_path / "split" / final))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    report = (tmp_path / "whole" / "report.md").read_text()
    assert "ε" in report and "dp_fedavg" in report


@pytest.mark.parametrize("overrides, match", [
    (["federated.privacy=dp_fedavg", "federated.dp_noise_multiplier=1"], r"^config key 'federated.weighting': .*set federated.weighting=uniform"),
    ([*DP], r"^config key 'federated.dp_noise_multiplier': expected a noise multiplier, or federated.dp_target_epsilon"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_target_epsilon=4"], r"'federated.dp_target_epsilon': expected null when"),
    ([*DP, "federated.dp_noise_multiplier=0"], r"'federated.dp_noise_multiplier': expected a positive number"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_delta=1"], r"'federated.dp_delta': expected 0 < delta < 1"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.strategy=scaffold"], r"^config key 'federated.strategy': .*not scaffold: its control variates"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.strategy=krum"], r"not krum: a robust aggregator"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.aggregation=flora"], r"^config key 'federated.aggregation': .*not flora"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.aggregation=fedex"], r"not fedex: FedEx-LoRA"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_adaptive_clip=true"], r"'federated.dp_clipped_count_stddev': adaptive clipping: .*no noise budget"),
    (["federated.dp_clip=0.5"], r"'federated.dp_clip': needs federated.privacy=dp_fedavg"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_noise=clients", "federated.dp_adaptive_clip=true"],
     r"^config key 'federated.dp_adaptive_clip': federated.dp_noise=clients clips on the clients"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_noise_split=3"], r"'federated.dp_noise_split': needs federated.dp_noise=clients"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_noise=both"], r"'federated.dp_noise': expected server or clients"),
    ([*DP, "federated.dp_noise_multiplier=1", "federated.dp_accountant=moments"], r"'federated.dp_accountant': expected rdp or pld"),
])
def test_what_dp_fedavg_refuses_is_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, [*TINY_RUN, *overrides])
    assert "\n" not in str(e.value)


def test_a_client_clips_its_own_update_and_adds_its_share_of_the_noise():
    from fedvlm.algorithms.dp_fedavg.client import clip_and_noise

    start = {"a": np.array([1.0, 1.0], np.float32), "b": np.zeros(1, np.float32)}
    trained = {"a": np.array([4.0, 1.0], np.float32), "b": np.array([4.0], np.float32)}  # delta (3, 0, 4): norm 5
    clipped = clip_and_noise(trained, start, 1.0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(clipped["a"], [1.6, 1.0], atol=1e-6)  # 1 + 3/5
    np.testing.assert_allclose(clipped["b"], [0.8], atol=1e-6)  # 4/5
    assert clipped["a"].dtype == np.float32
    within = clip_and_noise(trained, start, 10.0, 0.0, np.random.default_rng(0))  # norm 5 < 10: unchanged
    np.testing.assert_array_equal(within["a"], trained["a"])
    big = {"w": np.zeros(200_000, np.float32)}
    noised = clip_and_noise(big, big, 1.0, 0.25, np.random.default_rng(1))["w"]
    assert abs(noised.std() - 0.25) < 0.002 and abs(noised.mean()) < 0.002


def test_distributed_noise_is_split_so_that_m_shares_make_z_C_and_the_server_tops_up_missing_ones():
    # z 2, C 0.5, q N = 4: each client adds sigma_c = 2 * 0.5 / sqrt(4) = 0.5
    dp = _dp(z=2.0, clip=0.5, n=4, dp_noise="clients")
    g = {"w": np.zeros(100_000, np.float32)}
    state = dp.initialize(g)
    instructions = dp.configure(1, state, ["0", "1", "2", "3"], np.random.default_rng(0))
    assert [(i.config["dp_clip"], i.config["dp_noise_std"]) for i in instructions.values()] == [(0.5, 0.5)] * 4
    delta = np.full(100_000, 0.1, np.float32)  # (the clients clipped and noised already)
    every = [ClientUpdate(str(k), {"w": g["w"] + delta}, 10) for k in range(4)]
    full = dp.aggregate(1, state, every)
    np.testing.assert_allclose(full.global_state["w"], 0.1, atol=1e-6)  # 4 shares: nothing added, sum / 4
    assert full.scalars["dp_noise_top_up"] == 0 and full.scalars["dp_clipped"] is None
    half = dp.aggregate(1, state, every[:2]).global_state["w"]
    # 2 shares missing: the server adds N(0, 2 * 0.5^2) to the sum, then divides by 4
    added = half.astype(np.float64) * 4 - 2 * 0.1
    assert abs(added.std() - 0.5 * np.sqrt(2)) < 0.01 and abs(added.mean()) < 0.01


def test_a_run_with_distributed_noise_clips_on_the_clients_and_spends_the_same_epsilon(tmp_path):
    from fedvlm.cli import main

    # C = 1e-4 and next to no noise: a round can move the global adapter by at most K C / (q N) = C
    job = [*TINY_RUN, *DP, "federated.dp_noise=clients", "federated.dp_noise_multiplier=1e-6", "federated.dp_clip=1e-4",
           "eval.keep_last=2", f"run.output_dir={tmp_path}", "run.name=d"]
    assert main(["run", *job]) == 0
    run = tmp_path / "d"
    one, two = (load_file(str(run / "adapters" / f"round_000{r}" / "adapter_model.safetensors")) for r in (1, 2))
    step = np.sqrt(sum(np.sum((two[k].astype(np.float64) - one[k]) ** 2) for k in one))
    assert 1e-6 < step <= 1e-4 * 1.001
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["privacy"]["epsilon"] for r in records[1:]] == pytest.approx([epsilon(1e-6, 1.0, r, 1e-5) for r in (1, 2)])


def test_every_server_optimizer_and_summed_variant_runs_privately():
    for extra in (["federated.strategy=fedadam"], ["federated.strategy=fedavgm"], ["federated.strategy=fedprox"],
                  ["federated.aggregation=ffa"], ["federated.aggregation=fedsa"]):
        load_config(None, [*TINY_RUN, *DP, "federated.dp_noise_multiplier=1", *extra])  # accepted


def test_a_private_run_is_the_same_on_flower(tmp_path, monkeypatch):
    """DP-FedAvg sits in the server's strategy: on Flower's simulation runtime the same
    clients are sampled, the same noise is drawn and the same epsilon is spent. With
    FedSA-LoRA, whose B never leaves a node during training: the nodes report their own
    models when the server asks (the reference model each round, the export at the end),
    and every file matches the in-process run byte for byte."""
    from fedvlm.cli import main

    monkeypatch.chdir(tmp_path)
    common = [*TINY_RUN, *DP, "partition.num_clients=3", "federated.fraction=0.67", "federated.strategy=fedadam",
              "federated.aggregation=fedsa", "federated.dp_target_epsilon=20", f"run.output_dir={tmp_path}"]
    assert main(["run", *common, "run.name=inproc"]) == 0
    assert main(["run", *common, "run.name=flower", "run.engine=flower-sim", ONE_ACTOR]) == 0
    ours = [json.loads(line) for line in (tmp_path / "flower" / "metrics.jsonl").read_text().splitlines()][1:]
    theirs = [json.loads(line) for line in (tmp_path / "inproc" / "metrics.jsonl").read_text().splitlines()][1:]
    assert [r["privacy"] for r in ours] == [r["privacy"] for r in theirs]
    assert [sorted(r["clients"]) for r in ours] == [sorted(r["clients"]) for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["eval"] == b["eval"]
        assert {c: m["loss"] for c, m in a["clients"].items()} == {c: m["loss"] for c, m in b["clients"].items()}
        assert (a["bytes_up"], a["bytes_down"]) == (b["bytes_up"], b["bytes_down"])
        # a node is set up once per Ray actor that serves it (two here, one per CPU), not
        # once per message
        assert all(1 <= m["node_loads"] <= 2 for m in a["clients"].values())
    theirs_dir = tmp_path / "inproc"
    files = sorted(p.relative_to(theirs_dir) for p in (theirs_dir / "adapters").rglob("*.safetensors"))
    assert {str(f.parent) for f in files} >= {"adapters/final", *(f"adapters/personalized/{c}" for c in "012")}
    for f in files:
        assert (tmp_path / "flower" / f).read_bytes() == (theirs_dir / f).read_bytes(), f


def test_a_private_run_with_a_target_epsilon_cannot_be_extended(tmp_path):
    """Its noise was calibrated to spend the target over the rounds it was started with."""
    from fedvlm.engine.resume import check_resume

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(
        "federated: {privacy: dp_fedavg, weighting: uniform, dp_target_epsilon: 8, rounds: 2}\n")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"cannot change federated.rounds with federated.dp_target_epsilon set"):
        check_resume(run, ["federated.rounds=4"])
    check_resume(run, ["federated.rounds=2"])  # the same length resumes

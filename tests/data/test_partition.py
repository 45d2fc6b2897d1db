"""Federated partitioning: invariants of every method, local splits, histograms, plots."""

import sys
import warnings

import datasets
import numpy as np
import pytest

from fedvlm.data.partition import (
    PARTITION_METHODS,
    overlap_partition,
    partition_indices,
    split_local,
)
from fedvlm.data.partition_report import (
    format_partition_table,
    label_histograms,
    plot_partition_heatmap,
)
from fedvlm.errors import ConfigError, DataError

NUM_ROWS = 600
LABELS = [f"label{j}" for j in range(6)]
GROUPS = ["g0", "g1", "g2", "g3"]


@pytest.fixture(scope="module")
def dataset():
    """600 rows, 6 unevenly sized labels, 4 groups, and an image column whose files do
    not exist: partitioning must never decode images."""
    rng = np.random.default_rng(123)
    labels = rng.choice(LABELS, size=NUM_ROWS, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
    groups = rng.choice(GROUPS, size=NUM_ROWS)
    data = datasets.Dataset.from_dict(
        {
            "image": [f"/does/not/exist/{i}.png" for i in range(NUM_ROWS)],
            "answer": labels.tolist(),
            "question_type": groups.tolist(),
        }
    )
    return data.cast_column("image", datasets.Image())


def _answers(dataset):
    return np.asarray(dataset.select_columns(["answer"]).to_dict()["answer"])


def _check_disjoint_cover(partitions, rows):
    flat = [i for part in partitions for i in part]
    assert len(flat) == len(set(flat)), "a row is on two clients"
    assert sorted(flat) == sorted(rows)
    assert all(part == sorted(part) for part in partitions)


def _mean_entropy(dataset, partitions):
    _, counts = label_histograms(dataset, partitions, "answer")
    counts = counts[counts.sum(axis=1) > 0]
    probs = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, -probs * np.log(probs), 0.0)
    return terms.sum(axis=1).mean()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_clients", [2, 5, 10])
@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("iid", {}),
        ("dirichlet", {"alpha": 0.1}),
        ("dirichlet", {"alpha": 1.0}),
        ("dirichlet", {"alpha": 100.0}),
    ],
)
def test_disjoint_cover_and_deterministic(dataset, method, kwargs, num_clients, seed):
    parts = partition_indices(dataset, method, num_clients, seed, **kwargs)
    assert len(parts) == num_clients
    _check_disjoint_cover(parts, range(NUM_ROWS))
    assert partition_indices(dataset, method, num_clients, seed, **kwargs) == parts
    assert partition_indices(dataset, method, num_clients, seed + 100, **kwargs) != parts


def test_iid_sizes_balanced(dataset):
    sizes = [len(p) for p in partition_indices(dataset, "iid", 7, 0)]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_min_partition_size(dataset):
    parts = partition_indices(dataset, "dirichlet", 5, 0, alpha=0.5, min_partition_size=40)
    assert min(len(p) for p in parts) >= 40


def test_dirichlet_small_alpha_is_more_skewed(dataset):
    def entropy(alpha, seed):
        return _mean_entropy(dataset, partition_indices(dataset, "dirichlet", 8, seed, alpha=alpha))

    skewed = [entropy(0.05, seed) for seed in range(3)]
    uniform = [entropy(100.0, seed) for seed in range(3)]
    assert np.mean(skewed) < np.mean(uniform) - 0.3


@pytest.mark.parametrize("labels_per_client", [1, 2, 3])
@pytest.mark.parametrize("num_clients", [6, 9])
def test_pathological_deterministic_covers_all(dataset, num_clients, labels_per_client):
    parts = partition_indices(
        dataset, "pathological", num_clients, 0, labels_per_client=labels_per_client
    )
    _check_disjoint_cover(parts, range(NUM_ROWS))
    answers = _answers(dataset)
    for client, part in enumerate(parts):
        got = set(answers[part])
        assert len(got) <= labels_per_client
        # flwr-datasets "deterministic": client i holds labels i, i+1, ... (mod #labels)
        assert got <= {LABELS[(client + i) % len(LABELS)] for i in range(labels_per_client)}


@pytest.mark.filterwarnings("ignore:pathological partition")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_clients", [3, 5])
def test_pathological_random(dataset, num_clients, seed):
    kwargs = {"labels_per_client": 2, "class_assignment": "random"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = partition_indices(dataset, "pathological", num_clients, seed, **kwargs)
    answers = _answers(dataset)
    used = set().union(*(set(answers[p]) for p in parts))
    unused = sorted(set(LABELS) - used)
    messages = [str(w.message) for w in caught if "assigned to no client" in str(w.message)]
    if unused:
        assert len(messages) == 1 and str(unused) in messages[0]
    else:
        assert messages == []
    assert all(len(set(answers[p])) <= 2 for p in parts)
    # Disjoint, and covering exactly the rows whose label some client was given.
    _check_disjoint_cover(parts, [i for i, a in enumerate(answers) if a in used])
    assert partition_indices(dataset, "pathological", num_clients, seed, **kwargs) == parts


def test_pathological_random_depends_on_seed(dataset):
    kwargs = {"labels_per_client": 2, "class_assignment": "random"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {str(partition_indices(dataset, "pathological", 4, s, **kwargs)) for s in range(4)}
    assert len(runs) > 1


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("num_clients", [2, 4, 7])
@pytest.mark.parametrize("rho", [0.0, 0.25, 0.5, 1.0])
def test_overlap_shares_exactly_the_pool(dataset, rho, num_clients, seed):
    parts = partition_indices(dataset, "overlap", num_clients, seed, overlap=rho)
    per_client = NUM_ROWS // num_clients
    shared = round(rho * per_client)
    assert [len(p) for p in parts] == [per_client] * num_clients
    pool = set.intersection(*map(set, parts))
    assert len(pool) == shared
    for a in range(num_clients):
        for b in range(a + 1, num_clients):
            assert set(parts[a]) & set(parts[b]) == pool
    uniques = [sorted(set(p) - pool) for p in parts]
    _check_disjoint_cover(uniques, [i for u in uniques for i in u])
    assert all(0 <= i < NUM_ROWS for p in parts for i in p)
    assert partition_indices(dataset, "overlap", num_clients, seed, overlap=rho) == parts
    if rho < 1.0:
        assert partition_indices(dataset, "overlap", num_clients, seed + 1, overlap=rho) != parts


def test_overlap_rejects_bad_rho():
    with pytest.raises(ConfigError, match="partition.overlap"):
        overlap_partition(100, 4, 1.5, 0)


def test_natural_one_value_per_client(dataset):
    parts = partition_indices(dataset, "natural", len(GROUPS), 0)
    _check_disjoint_cover(parts, range(NUM_ROWS))
    groups = np.asarray(dataset.select_columns(["question_type"]).to_dict()["question_type"])
    values = [set(groups[p]) for p in parts]
    assert all(len(v) == 1 for v in values)
    assert [v.pop() for v in values] == GROUPS  # clients follow the sorted values
    assert partition_indices(dataset, "natural", len(GROUPS), 5) == parts


def test_natural_wrong_num_clients(dataset):
    with pytest.raises(ConfigError, match=r"partition\.num_clients.*4 distinct values"):
        partition_indices(dataset, "natural", 3, 0)


def test_natural_other_column(dataset):
    parts = partition_indices(dataset, "natural", len(LABELS), 0, natural_column="answer")
    answers = _answers(dataset)
    assert [set(answers[p]) for p in parts] == [{label} for label in LABELS]


def test_unknown_method(dataset):
    with pytest.raises(ConfigError) as info:
        partition_indices(dataset, "shards", 3, 0)
    message = str(info.value)
    assert "partition.method" in message and "'shards'" in message
    assert all(method in message for method in PARTITION_METHODS)


@pytest.mark.parametrize("num_clients", [0, NUM_ROWS + 1])
def test_bad_num_clients(dataset, num_clients):
    with pytest.raises(ConfigError, match="partition.num_clients"):
        partition_indices(dataset, "iid", num_clients, 0)


def test_bad_parameters(dataset):
    with pytest.raises(ConfigError, match="partition.alpha"):
        partition_indices(dataset, "dirichlet", 3, 0, alpha=0)
    with pytest.raises(ConfigError, match="partition.labels_per_client"):
        partition_indices(dataset, "pathological", 3, 0, labels_per_client=7)
    with pytest.raises(DataError, match="'label'.*answer, question_type"):
        partition_indices(dataset, "dirichlet", 3, 0, label_column="label")


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("size", "fraction"), [(0, 0.2), (1, 0.2), (2, 0.01), (10, 0.2), (57, 0.3), (20, 0.0)]
)
def test_split_local(size, fraction, seed):
    indices = list(range(1000, 1000 + 3 * size, 3))
    train, test = split_local(indices, fraction, seed)
    assert not set(train) & set(test)
    assert sorted(train + test) == indices
    if fraction > 0 and size >= 2:
        assert 1 <= len(test) < size
        assert len(test) == max(1, round(fraction * size))
    else:
        assert test == []
    assert split_local(indices, fraction, seed) == (train, test)


def test_split_local_seed_changes_split():
    indices = list(range(100))
    assert split_local(indices, 0.2, 0) != split_local(indices, 0.2, 1)
    with pytest.raises(ConfigError, match="test_fraction"):
        split_local(indices, 1.0, 0)


def test_histograms_and_table(dataset):
    parts = partition_indices(dataset, "dirichlet", 4, 0, alpha=0.3)
    labels, counts = label_histograms(dataset, parts, "answer")
    assert labels == sorted(LABELS)
    assert counts.shape == (4, len(LABELS))
    assert counts.sum(axis=1).tolist() == [len(p) for p in parts]
    assert counts.sum() == NUM_ROWS

    table = format_partition_table(labels, counts)
    lines = table.splitlines()
    assert lines[0].split() == ["client", "size", "labels", *labels]
    assert len(lines) == 1 + 1 + 4 + 1 + 1  # header, rule, clients, rule, total
    assert lines[-1].split()[:2] == ["total", str(NUM_ROWS)]
    for client, part in enumerate(parts):
        assert lines[2 + client].split()[:2] == [str(client), str(len(part))]

    short = format_partition_table(labels, counts, max_labels=2)
    assert short.splitlines()[0].split()[-1] == "(other)"
    assert short.splitlines()[-1].split()[1] == str(NUM_ROWS)


def test_histogram_of_overlap_counts_shared_rows_per_client(dataset):
    parts = partition_indices(dataset, "overlap", 3, 0, overlap=0.5)
    _, counts = label_histograms(dataset, parts, "answer")
    assert counts.sum(axis=1).tolist() == [len(p) for p in parts]


def test_heatmap_png(dataset, tmp_path):
    parts = partition_indices(dataset, "pathological", 6, 0)
    labels, counts = label_histograms(dataset, parts, "answer")
    path = tmp_path / "plots" / "heatmap.png"
    plot_partition_heatmap(labels, counts, path, title="pathological")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_easyvqa_partitions_quickly():
    import time

    from fedvlm.data.easyvqa import load_easyvqa

    train = load_easyvqa("train")
    start = time.perf_counter()
    parts = partition_indices(train, "dirichlet", 10, 0, alpha=0.5)
    elapsed = time.perf_counter() - start
    _check_disjoint_cover(parts, range(train.num_rows))
    assert elapsed < 5.0  # ~0.4 s normally; generous for a busy shared machine


def test_split_local_cap_samples_at_random_not_the_lowest_rows():
    # Sources are often sorted (by topic, by label): a capped local test set must still be
    # a random sample of the client's rows, with the rest returned to training.
    indices = list(range(0, 4000, 2))
    train, test = split_local(indices, 0.5, seed=3, max_test=100)
    assert len(test) == 100 and len(train) == len(indices) - 100
    assert sorted(train + test) == indices
    assert max(test) > indices[len(indices) // 2]  # not just the first rows
    assert np.mean(test) == pytest.approx(np.mean(indices), rel=0.15)


def test_validation_rows_are_held_out_of_the_training_split():
    import datasets

    from fedvlm.config import load_config
    from fedvlm.engine.federation import held_out
    from fedvlm.errors import ConfigError

    train = datasets.Dataset.from_dict({"row": list(range(50))})
    cfg = load_config(None, ["data.validation_size=12"])
    rest, validation = held_out(cfg, train)
    assert len(validation) == 12 and len(rest) == 38
    assert set(validation["row"]).isdisjoint(rest["row"]) and set(validation["row"]) | set(rest["row"]) == set(range(50))
    assert held_out(cfg, train)[1]["row"] == validation["row"]  # the run's seed decides
    other = held_out(load_config(None, ["data.validation_size=12", "run.seed=1"]), train)[1]["row"]
    assert other != validation["row"]
    with pytest.raises(ConfigError, match=r"^config key 'data.validation_size': 50 rows held out .* leaves none"):
        held_out(load_config(None, ["data.validation_size=50"]), train)

"""Set up one client node from the run's config and the node's own config: what a Flower
ClientApp does once per process (the base model stays loaded for the whole run).

Node config (Flower's ``--node-config``, hyphenated keys):

- ``state-dir``: the node's own directory for what it keeps between rounds (required);
- its data, either
  - ``data-path`` (a VQA or text file or directory the node holds; every row trains,
    ``partition.local_test_fraction`` of them held out as its local test), with an optional
    ``image-dir`` and ``client-id``, or
  - ``partition-id`` and ``num-partitions`` (demos and tests): the rows the simulator gives
    client ``partition-id`` of the run's ``data.source``, so both engines train on the same
    splits. ``num-partitions`` must equal ``partition.num_clients``;
- ``model-path`` (optional): the base model this node loads, whatever ``model.path`` the
  server's job names (the server's path is a path on the server's machine).

What the node reads from its disk is named by its own config only: the job's settings
(LoRA, training, evaluation) come with the server's messages, never as a file name.
"""

import zlib
from dataclasses import replace
from pathlib import Path

from fedvlm.client import Node
from fedvlm.config import Config
from fedvlm.data.partition import split_local
from fedvlm.errors import ConfigError
from fedvlm.engine.federation import LoadedModel, build_clients, load_datasets, load_model, node_view, peek_family
from fedvlm.engine.rundir import ClientStore
from fedvlm.seeds import Stream, seed_for


def build_node(cfg: Config, node_config: dict, loaded: LoadedModel | None = None) -> Node:
    """The node of ``node_config`` in the run of ``cfg``. Nodes of one process (Flower's
    simulation runs several virtual nodes in one actor) share ``loaded``, the one base
    model, as the in-process simulator's clients do."""
    if "state-dir" not in node_config:
        raise ConfigError("node config: 'state-dir' missing (the node's own directory for its state)")
    if "model-path" in node_config:
        cfg = replace(cfg, model=replace(cfg.model, path=str(node_config["model-path"])))
    family = peek_family(cfg)
    if "partition-id" in node_config:
        cid, seed_id, train_ds, train, test = _partition(cfg, family, node_config)
    elif "data-path" in node_config:
        cid, seed_id, train_ds, train, test = _own_data(cfg, family, node_config)
    else:
        raise ConfigError("node config: expected 'data-path' (the node's own data) or 'partition-id' and 'num-partitions'")
    loaded = loaded or load_model(cfg, family, train_ds)
    return node_view(loaded, cid, seed_id, train_ds, train, test, ClientStore(Path(node_config["state-dir"])))


def node_name(node_config: dict) -> str:
    """What a node calls itself before it is set up (a setup failure is named by it): its
    ``client-id``, else its data file's stem, else its ``partition-id``."""
    if "client-id" in node_config:
        return str(node_config["client-id"])
    if "data-path" in node_config:
        return Path(str(node_config["data-path"])).stem
    return str(node_config.get("partition-id", "?"))


def _partition(cfg: Config, family, node_config: dict):
    pid, n = node_config["partition-id"], node_config.get("num-partitions")
    if n != cfg.partition.num_clients:
        raise ConfigError(f"node config: 'num-partitions' is {n!r}, expected partition.num_clients ({cfg.partition.num_clients})")
    if not isinstance(pid, int) or not 0 <= pid < n:
        raise ConfigError(f"node config: 'partition-id' is {pid!r}, expected an integer in 0..{n - 1}")
    train_ds, _ = load_datasets(cfg, family)
    client = build_clients(cfg, train_ds)[str(pid)]
    return str(pid), pid, train_ds, client.train, client.test


def _own_data(cfg: Config, family, node_config: dict):
    path = Path(node_config["data-path"])
    if not path.exists():
        raise ConfigError(f"node config: 'data-path' {path} does not exist")
    data = replace(cfg.data, source=str(path), image_dir=node_config.get("image-dir"), max_train_examples=None)
    train_ds, _ = load_datasets(replace(cfg, data=data), family)
    cid = str(node_config.get("client-id", path.stem))
    seed_id = zlib.crc32(cid.encode())  # a stable per-node stream, whatever the node is called
    p = cfg.partition
    train, test = split_local(list(range(len(train_ds))), p.local_test_fraction, seed_for(cfg.run.seed, Stream.LOCAL_TEST, seed_id), p.max_local_test)
    return cid, seed_id, train_ds, train, test

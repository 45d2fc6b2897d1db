"""``run.engine=flower-sim``: fedvlm's ServerApp and ClientApp on Flower's simulation runtime.

A local SuperLink (``--simulation``, bound to 127.0.0.1, no runtime dependency
installation: the apps run in this process's environment, never a ``uv sync`` that would
pull another torch) runs ``partition.num_clients`` virtual SuperNodes; ``flwr run`` starts
the run and streams its logs. The SuperLink's state, the app bundle and the connection
config live in a temporary ``FLWR_HOME`` removed afterwards; the run itself is written to
``run_dir`` by the ServerApp exactly as the in-process simulator writes it.
"""

import os
import subprocess
import tempfile
from pathlib import Path

from fedvlm.config import Config
from fedvlm.errors import ConfigError, FedvlmError
from fedvlm.engine import rundir
from fedvlm.flower.deploy import write_app
from fedvlm.flower.loopback import BIN, flower_env, free_port, wait_for_port
from fedvlm.flower.run_config import write_run_config


def client_resources(cfg: Config, cpus: int | None = None, gpus: int | None = None) -> tuple[int, float]:
    """(CPUs, GPUs) each virtual SuperNode reserves from Ray: ``run.flower_client_cpus`` and
    ``run.flower_client_gpus`` (null: one GPU where CUDA sees any, else none), checked
    against this machine (``cpus`` / ``gpus`` default to what it has), because Ray waits
    forever for a client that reserves more than exists."""
    import torch

    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    gpus = torch.cuda.device_count() if gpus is None else gpus
    want_gpus = cfg.run.flower_client_gpus
    if want_gpus is None:
        want_gpus = 1.0 if gpus else 0.0
    if cfg.run.flower_client_cpus > cpus:
        raise ConfigError(f"config key 'run.flower_client_cpus': {cfg.run.flower_client_cpus} CPUs per client, "
                          f"but this machine has {cpus}")
    if want_gpus > gpus:
        raise ConfigError(f"config key 'run.flower_client_gpus': {want_gpus:g} GPUs per client, "
                          f"but CUDA sees {gpus} on this machine")
    return cfg.run.flower_client_cpus, want_gpus


def federation_config(cfg: Config) -> str:
    """``flwr run --federation-config``: the virtual SuperNodes and what each reserves."""
    cpus, gpus = client_resources(cfg)
    return (f"num-supernodes={cfg.partition.num_clients} client-resources-num-cpus={cpus} "
            f"client-resources-num-gpus={gpus:g}")


def run_flower_simulation(cfg: Config, run_dir: Path, resume: bool = False) -> None:
    """Run (or continue) the job of ``run_dir/config.yaml`` on Flower's simulation runtime."""
    with tempfile.TemporaryDirectory(prefix="fedvlm-flower-") as tmp:
        home, port = Path(tmp), free_port()
        app = write_app(home / "app")
        (home / "config.toml").write_text(f'[superlink.fedvlm]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
        env = flower_env(home)
        log = run_dir / "flower-superlink.log"
        with open(log, "w") as out:
            link = subprocess.Popen(
                [str(BIN / "flower-superlink"), "--insecure", "--simulation",
                 "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            try:
                wait_for_port(port, link)
            except FedvlmError as e:
                raise FedvlmError(f"flower-superlink: {e}; its log: {log}") from None
            run_config = write_run_config(home / "run_config.toml", config=str(run_dir / rundir.CONFIG_FILE),
                                          run_dir=run_dir, resume=resume)
            subprocess.run(
                [str(BIN / "flwr"), "run", str(app), "fedvlm",
                 "--federation-config", federation_config(cfg),
                 "--run-config", str(run_config), "--stream"],
                env=env, check=False, stdout=None if cfg.run.progress else subprocess.DEVNULL,
            )
        finally:
            link.terminate()
            try:
                link.wait(30)
            except subprocess.TimeoutExpired:
                link.kill()
    done = rundir.latest_round(run_dir)
    stopped = run_dir / rundir.STOPPED_FILE
    if done != cfg.federated.rounds and stopped.is_file():  # the ServerApp's own one line
        raise FedvlmError(stopped.read_text(encoding="utf-8").strip())
    if done != cfg.federated.rounds:
        raise FedvlmError(
            f"the Flower run stopped after {done or 0} of {cfg.federated.rounds} rounds; "
            f"SuperLink log: {log} (continue with --resume {run_dir})"
        )

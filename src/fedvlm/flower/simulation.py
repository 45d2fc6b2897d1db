"""``run.engine=flower-sim``: fedvlm's ServerApp and ClientApp on Flower's simulation runtime.

A local SuperLink (``--simulation``, bound to 127.0.0.1, no runtime dependency
installation: the apps run in this process's environment, never a ``uv sync`` that would
pull another torch) runs ``partition.num_clients`` virtual SuperNodes; ``flwr run`` starts
the run and streams its logs. The SuperLink's state, the app bundle and the connection
config live in a temporary ``FLWR_HOME`` removed afterwards; the run itself is written to
``run_dir`` by the ServerApp exactly as the in-process simulator writes it.
"""

import subprocess
import tempfile
from pathlib import Path

from fedvlm.config import Config
from fedvlm.errors import FedvlmError
from fedvlm.engine import rundir
from fedvlm.flower.deploy import write_app
from fedvlm.flower.loopback import BIN, flower_env, free_port, wait_for_port
from fedvlm.flower.run_config import write_run_config


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
                 "--federation-config", f"num-supernodes={cfg.partition.num_clients} client-resources-num-cpus=1",
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

"""A whole Flower deployment on this machine, over 127.0.0.1: one SuperLink with TLS and
SuperNode authentication, registered SuperNodes (each optionally with a fedvlm worker), and
``flwr run``. The same processes and flags as across machines (README, "Many machines"),
for the deployment tests and ``benchmarks/flower.py``.

    with LoopbackDeployment(root) as d:
        d.node(0, worker=True)
        d.node(1, worker=True)
        d.run(["partition.num_clients=2"], root / "run")

With ``signed=True`` the nodes run only apps signed by the deployment's signing key
(``signed_apps``): an app index serves the signed FAB, the SuperLink fetches it from there,
and each node checks the signature against its ``--trusted-entities``.

Every process it starts is stopped on exit; logs go to ``root/logs``.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

from fedvlm.errors import FedvlmError
from fedvlm.flower.deploy import make_certificates, make_node_key, write_app
from fedvlm.flower.run_config import write_run_config
from fedvlm.flower.signed_apps import make_signing_key, sign_fab
from fedvlm.flower.submit import BIN, submit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, seconds: float = 60.0) -> None:
    """Until something listens on 127.0.0.1:``port``; a one-line error if ``process`` (the
    one that should open it) exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise FedvlmError(f"{Path(process.args[0]).name} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise FedvlmError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


def flower_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment Flower's commands run in: ``FLWR_HOME`` (their state and connection
    config), no telemetry, and this Python's bin directory first on PATH (a SuperLink starts
    ``flower-superexec`` from there)."""
    return {**os.environ, **(extra or {}), "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class LoopbackDeployment:
    """A SuperLink on 127.0.0.1 and what is started against it; ``env`` adds to every
    process's environment (e.g. ``OMP_NUM_THREADS``); ``signed``: nodes trust only apps
    signed by ``keys/owner`` (`run` signs fedvlm's app and runs it from the app index)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, signed: bool = False):
        self.root, self.procs, self.runs, self.signed = Path(root), {}, 0, signed
        self.certs = make_certificates(self.root / "certs", ["127.0.0.1", "localhost"])
        self.port, home = free_port(), self.root / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink.local]\naddress = "127.0.0.1:{self.port}"\nroot-certificates = "{self.certs["ca.crt"]}"\n'
        )
        self.env = flower_env(home, env)
        self.logs = self.root / "logs"
        self.logs.mkdir()
        if signed:
            self.signing_key, self.trusted = make_signing_key(self.root / "keys", "owner")
            self.apps, self.index_port = self.root / "apps", free_port()
            self.apps.mkdir()
            self.env["FLWR_SUPERGRID_API_URL"] = f"http://127.0.0.1:{self.index_port}"  # the SuperLink's "Hub"

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as out:
            self.procs[name] = subprocess.Popen([str(BIN / args[0]), *args[1:]], env={**self.env, **(env or {})},
                                                stdout=out, stderr=subprocess.STDOUT)
        return self.procs[name]

    def __enter__(self):
        if self.signed:
            index = self.start("app-index", "python", "-m", "fedvlm.cli", "flower", "app-index", str(self.apps),
                               "--port", str(self.index_port))
            wait_for_port(self.index_port, index)
        self.start("superlink", "flower-superlink", "--ssl-ca-certfile", str(self.certs["ca.crt"]),
                   "--ssl-certfile", str(self.certs["server.pem"]), "--ssl-keyfile", str(self.certs["server.key"]),
                   "--enable-supernode-auth", "--disable-runtime-dependency-installation",
                   "--host", "127.0.0.1", "--port", str(self.port))
        wait_for_port(self.port, self.procs["superlink"])
        return self

    def __exit__(self, *exc):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    def node(self, i: int, worker: bool = False, register: bool = True, *extra: str,
             env: dict[str, str] | None = None, of: int = 2) -> subprocess.Popen:
        """SuperNode ``node<i>`` serving partition ``i`` of ``of`` (``partition.num_clients``)
        with its state in ``root/state<i>``; ``worker``: with a fedvlm worker
        (``procs["worker<i>"]``) that keeps its model loaded; ``register``: its key
        registered with the SuperLink; ``extra``: more ``flower-supernode`` flags; ``env``:
        added to the node's processes' environment."""
        private, public = make_node_key(self.root / "keys", f"node{i}")
        if register:
            subprocess.run([str(BIN / "flwr"), "supernode", "register", str(public), "local"], env=self.env,
                           check=True, capture_output=True)
        node_config = f"partition-id={i} num-partitions={of} state-dir='{self.root / f'state{i}'}'"
        if worker:
            sock = self.root / f"node{i}.sock"
            self.start(f"worker{i}", "python", "-m", "fedvlm.cli", "flower", "worker", str(sock), env=env)
            deadline = time.monotonic() + 60
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            node_config += f" worker='{sock}'"
        tls = [] if "--insecure" in extra else ["--root-certificates", str(self.certs["ca.crt"])]
        if self.signed:
            extra = ("--trusted-entities", str(self.trusted), *extra)
        return self.start(f"node{i}", "flower-supernode", "--superlink", f"127.0.0.1:{self.port}", *tls,
                          "--auth-supernode-private-key", str(private), "--node-config", node_config,
                          "--port", str(free_port()), *extra, env=env)

    def signed_app(self, app: Path) -> str:
        """``app`` built by ``flwr build`` into the app index and signed by ``keys/owner``,
        as a signer would; its app spec (``@fedvlm/fedvlm-app==1.0.0``) for ``flwr run``."""
        built = subprocess.run([str(BIN / "flwr"), "build", "--app", str(app)], cwd=self.apps, env=self.env,
                               capture_output=True, text=True)
        fabs = sorted(self.apps.glob("*.fab"), key=lambda p: p.stat().st_mtime)
        if built.returncode != 0 or not fabs:
            raise FedvlmError(f"flwr build --app {app}: {(built.stderr or built.stdout).strip()[-300:]}")
        sign_fab(fabs[-1], self.signing_key, "owner")
        return "@fedvlm/fedvlm-app==1.0.0"

    def run(self, overrides: list[str], run_dir: Path, wait: bool = True, signed: bool | None = None):
        """The fedvlm app run with ``overrides``, written to ``run_dir``: with ``wait``,
        `submit` (raising `FedvlmError` unless the run completed); else ``flwr run`` in
        the background (``procs["flwr-run"]``). ``signed`` (default: the deployment's):
        run the app signed from the app index, else sent from its directory unsigned."""
        app = self.root / "app"
        if not app.exists():
            write_app(app)
        target = self.signed_app(app) if (self.signed if signed is None else signed) else str(app)
        self.runs += 1
        run_config = write_run_config(self.root / f"run_config_{self.runs}.toml", overrides=overrides, run_dir=run_dir)
        if wait:
            return submit(target, "local", str(run_config), env=self.env)
        return self.start("flwr-run", "flwr", "run", target, "local", "--run-config", str(run_config), "--stream")

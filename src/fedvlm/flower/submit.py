"""Start a run on a SuperLink, follow its log, and say how it ended.

``flwr run --stream`` exits 0 whatever became of the run, also when the ServerApp raised
(flwr 1.42 streams the log and stops). ``fedvlm flower submit`` runs the same three Flower
commands a user would (``flwr run --format json``, ``flwr log --stream``, ``flwr ls
--run-id --format json``) and exits nonzero, with one line naming the run's final status
and Flower's details, unless the run completed.
"""

import json
import subprocess
import sys
from pathlib import Path

from fedvlm.errors import FedvlmError

BIN = Path(sys.executable).parent  # flwr's commands, installed beside this Python
COMPLETED = "finished:completed"


def _flwr(*args: str, env: dict | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=env, capture_output=capture, text=True)


def _last_json(text: str, what: str) -> dict:
    """The last JSON object in ``text`` that starts a line (Flower may indent it over several)."""
    starts = [i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            return json.JSONDecoder().raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    raise FedvlmError(f"{what}: Flower printed no JSON result: {text.strip()[-300:]!r}")


def submit(app: Path | str, superlink: str, run_config: str, env: dict | None = None) -> int:
    """Run ``app`` (a directory, or an app spec ``@publisher/name==x.y.z`` the SuperLink
    fetches with its signatures) on ``superlink`` (a connection name of Flower's config) with
    ``run_config`` (a TOML file or Flower's ``key=value`` string), streaming its log to
    this process's output; the run id once it completed, else `FedvlmError` with how it
    ended."""
    started = _flwr("run", str(app), superlink, "--run-config", run_config, "--format", "json", env=env)
    if started.returncode != 0:
        raise FedvlmError(f"flwr run {app} {superlink}: {(started.stderr or started.stdout).strip()[-300:]}")
    result = _last_json(started.stdout, "flwr run")
    if not result.get("success") or result.get("run-id") is None:
        raise FedvlmError(f"flwr run {app} {superlink}: no run started ({result})")
    run_id = str(result["run-id"])
    _flwr("log", run_id, superlink, "--stream", env=env, capture=False)
    listed = _flwr("ls", superlink, "--run-id", run_id, "--format", "json", env=env)
    runs = _last_json(listed.stdout, f"flwr ls --run-id {run_id}").get("runs") or [{}]
    status, details = runs[0].get("status", "unknown"), runs[0].get("status-details", "")
    if status != COMPLETED:
        raise FedvlmError(f"run {run_id} on {superlink} ended {status}{f' ({details})' if details else ''}; "
                          "the ServerApp's log above says why (and its run directory's stopped.txt, if it stopped)")
    return int(run_id)

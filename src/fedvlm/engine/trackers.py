"""Experiment trackers (``run.report_to``), as HF ``TrainingArguments.report_to`` users know
them: TensorBoard, MLflow, Weights & Biases and trackio, each through its own library.

Each round's record of metrics.jsonl goes to every tracker as flat scalars, with the
round as the step: ``eval/accuracy``, ``eval/personalized/mean``, ``clients/<id>/loss``,
``eval/clients/<id>/accuracy``, ``bytes_up``, ``seconds``, ``privacy/epsilon``... (every
number of the record, its path joined by ``/``). The run's config goes in as parameters
(``section.key``), and the final adapter as an artifact where the tracker keeps artifacts
(MLflow, W&B). Where each writes:

- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in
  ``RUN_DIR/tensorboard`` (the config as a text summary; TensorBoard has no artifacts);
- ``mlflow``: an ``MlflowClient`` run (experiment ``fedvlm``) at ``MLFLOW_TRACKING_URI``,
  else in ``RUN_DIR/mlflow.db`` (SQLite; MLflow 3 retired its file store) with the
  artifacts in ``RUN_DIR/mlartifacts``;
- ``wandb``: a W&B run in project ``WANDB_PROJECT`` (default ``fedvlm``) with its files
  under ``RUN_DIR``; ``WANDB_MODE=offline`` keeps it on disk for ``wandb sync``;
- ``trackio``: a trackio run in project ``fedvlm``, stored where trackio stores
  (``TRACKIO_DIR``).

A resumed run logs the rounds it runs to a tracker run of the same name. Each library is
an optional dependency (``pip install 'fedvlm[tracking]'``); a missing one is one line
before the run starts.
"""

import os
from pathlib import Path
from typing import Any

from fedvlm.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb", "trackio")
PROJECT = "fedvlm"


def check_trackers(names: list[str]) -> None:
    """One line for a tracker fedvlm does not know or whose library is not installed."""
    import importlib.util

    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"config key 'run.report_to': unknown tracker {name!r} (valid: {', '.join(TRACKERS)})")
        if importlib.util.find_spec(name) is None:  # each tracker's module is its name
            raise ConfigError(f"config key 'run.report_to': {name} needs its library (pip install 'fedvlm[tracking]')")


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """Every number of a metrics.jsonl record (booleans and the round excepted), its path
    joined by ``/``."""
    out = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= scalars(value, path + "/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and path != "round":
            out[path] = float(value)
    return out


def parameters(config: dict, prefix: str = "") -> dict[str, str]:
    """The run's config as flat ``section.key`` -> text."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= parameters(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class Trackers:
    """The run's trackers: ``log`` a record per round, ``finish`` with the final adapter."""

    def __init__(self, names: list[str], config: dict, config_text: str, run_dir: Path, run_name: str):
        check_trackers(names)
        self.trackers = [_OPEN[name](config, config_text, Path(run_dir), run_name) for name in names]

    def log(self, record: dict) -> None:
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(values, int(record["round"]))

    def finish(self, adapter_dir: Path | None) -> None:
        for tracker in self.trackers:
            tracker.finish(adapter_dir)


class _TensorBoard:
    def __init__(self, config: dict, config_text: str, run_dir: Path, run_name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + config_text + "\n```", 0)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, adapter_dir: Path | None) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, config: dict, config_text: str, run_dir: Path, run_name: str):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        here = not os.environ.get("MLFLOW_TRACKING_URI")
        uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}" if here else os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(PROJECT)
        artifacts = (run_dir / "mlartifacts").resolve().as_uri() if here else None
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(PROJECT, artifacts)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [Param(k, v[:6000]) for k, v in parameters(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def finish(self, adapter_dir: Path | None) -> None:
        if adapter_dir is not None:
            self.client.log_artifacts(self.run_id, str(adapter_dir), "adapter")
        self.client.set_terminated(self.run_id)


class _WandB:
    def __init__(self, config: dict, config_text: str, run_dir: Path, run_name: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_name, dir=str(run_dir),
                              config=config, reinit="create_new")
        self.name = run_name

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, adapter_dir: Path | None) -> None:
        if adapter_dir is not None:
            artifact = self.wandb.Artifact(f"{self.name}-adapter", type="model")
            artifact.add_dir(str(adapter_dir))
            self.run.log_artifact(artifact)
        self.run.finish()


class _Trackio:
    def __init__(self, config: dict, config_text: str, run_dir: Path, run_name: str):
        import trackio

        self.run = trackio.init(project=PROJECT, name=run_name, config=config, resume="allow")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, adapter_dir: Path | None) -> None:
        self.run.finish()


_OPEN: dict[str, Any] = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB, "trackio": _Trackio}

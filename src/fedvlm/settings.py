"""The config's sections as dataclasses: every key, its default and what it means.

`fedvlm.config` reads YAML and overrides into these and validates them; the README's
Configuration table documents them for users.
"""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunConfig:
    name: str | None = None  # None: "<strategy>-<date>-<time>", so runs never collide
    output_dir: str = "runs"
    seed: int = 0
    overwrite: bool = False
    baselines: list[str] = field(default_factory=lambda: ["centralized"])
    progress: bool = True
    # simulator (in process, the fast path) or flower-sim (Flower's simulation runtime:
    # a local SuperLink with partition.num_clients virtual SuperNodes; needs flwr[simulation])
    engine: str = "simulator"
    # flower-sim: what Ray reserves for each virtual SuperNode (client) in flight: CPUs, and
    # GPUs (a fraction lets clients share one; null: 1 where CUDA sees a GPU, else 0). Ray
    # hides every GPU from a client that reserves none, so it would train on the CPU.
    flower_client_cpus: int = 1
    flower_client_gpus: float | None = None
    # experiment trackers each round's metrics also go to: tensorboard, mlflow, wandb,
    # trackio (fedvlm/engine/trackers.py; pip install 'fedvlm[tracking]')
    report_to: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    path: str = "embedded"  # "embedded", "embedded-text", a local HF directory, or a hub id
    dtype: str = "float32"
    family: str = "auto"  # detected from the model's config; see models/families.py
    quantization: str = "none"  # none, 4bit (NF4, double quantization), 8bit (bitsandbytes)
    gradient_checkpointing: bool = False
    # transformers' attention kernel: sdpa (torch's fused attention; eager where the model
    # class has none), eager, flash_attention_2 / flash_attention_3 (their package and a
    # CUDA GPU), flex_attention
    attn_implementation: str = "sdpa"


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = "auto"  # family default, explicit names, or a regex
    modules_to_save: list[str] = field(default_factory=list)  # beyond the connector and head
    # What trains (FedVLMBench): lora, connector, connector_lora, two_stage (connector for
    # the first two_stage_rounds rounds, then LoRA); auto: connector_lora where the family
    # has a connector, else lora. A classifier head always trains.
    tuning: str = "auto"
    two_stage_rounds: int = 1
    init_adapter: str | None = None  # warm start from a PEFT adapter directory (same r, targets)
    # Heterogeneous ranks: {client_id: rank <= r} and/or groups {rank: [client ids]};
    # others use r. alpha/r is shared by all.
    client_ranks: dict[str, int] = field(default_factory=dict)
    rank_groups: dict[str, list] = field(default_factory=dict)


@dataclass
class DataConfig:
    source: str = "easyvqa"
    train_split: str = "train"
    test_split: str = "test"
    columns: dict[str, str] = field(default_factory=dict)
    image_dir: str | None = None
    pooled_test_size: int = 1000
    max_train_examples: int | None = None
    # Hold out this many rows of the (subsampled) training split and evaluate on them
    # instead of the test split, which is then never read: tuning (fedvlm bench's `tune`)
    # selects on these, never on the reported test set. null: evaluate on the test split.
    validation_size: int | None = None
    # Tokens per example, every family: a classifier's text is truncated; a text-only
    # generative example's prompt is cut from the left so that its answer stays whole, and
    # an example whose answer alone does not fit is dropped (counted in the log), as is an
    # image-text example that does not fit (its images cannot be cut). null: 128 for
    # classifiers, no limit for generative models (a VLM's image alone is many tokens).
    max_length: int | None = None
    # How instruction and conversation data are rendered: chat (the model's own template),
    # alpaca, plain ("{question}\nAnswer: {answer}"), auto (chat where the model has a
    # template, else alpaca for conversations, plain for question/answer rows).
    template: str = "auto"
    system_prompt: str | None = None  # a system turn for rows that have none
    # Hub dataset configs to load and concatenate, each row's question_type its subset's
    # name, so partition.method=natural gives one subset per client (the_cauldron:
    # [ai2d, chartqa, ...]; with one split only, split it: train_split='train[:90%]',
    # test_split='train[90%:]').
    subsets: list[str] = field(default_factory=list)


@dataclass
class PartitionConfig:
    method: str = "iid"
    num_clients: int = 4
    alpha: float = 1.0
    label_column: str = "answer"
    labels_per_client: int = 2
    overlap: float = 0.0
    natural_column: str = "question_type"
    min_partition_size: int = 10
    local_test_fraction: float = 0.1
    max_local_test: int = 200


@dataclass
class FederatedConfig:
    strategy: str = "fedavg"
    rounds: int = 8
    fraction: float = 1.0
    min_clients: int = 1
    # How the server weights each client's update: data_size (its training-set size n_k,
    # McMahan et al. 2017, as Flower clients report it), examples (examples trained this
    # round), uniform (1/K).
    weighting: str = "data_size"
    # The server strategy and the LoRA variant: names in fedvlm/algorithms/registry.py
    # (strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox, scaffold; variant:
    # naive, svd, ffa, fedsa, flora, fedex, fedalt), each documented in its folder.
    aggregation: str = "naive"
    # Client-level differential privacy around the strategy: none, or dp_fedavg (options
    # federated.dp_*: fedvlm/algorithms/dp_fedavg/server.py). Needs federated.weighting=uniform;
    # clients then take part each with probability federated.fraction (Poisson sampling).
    privacy: str = "none"
    # Secure aggregation on the Flower engines: none, or secaggplus (Flower's SecAgg+; options
    # federated.secagg_*: fedvlm/algorithms/secaggplus/options.py). The server then sees only
    # the weighted sum of each round's updates; strategies whose aggregate is not one are refused.
    secure_aggregation: str = "none"
    compression: str = "none"  # client->server: none, int8, int4 (stochastic, per block)
    compression_block: int = 64
    # Flower engine: seconds the server waits for a round's replies; a client that has not
    # answered by then is left out of the round (null: wait for every client).
    round_timeout: float | None = None
    # An update whose change is more than this many times the median change of the
    # round's other valid updates is left out of the round (null: no bound).
    max_norm_ratio: float | None = 100.0
    # Clients told to misbehave, for tests, demos and benchmarks/robustness.py (client/faults.py):
    # faults (rejected updates or none: raise, hang, nan, inf, shape, dtype, missing_key,
    # extra_key, norm) and attacks (updates that pass validation: sign_flip, scale, noise,
    # label_flip),
    # each entry {kind, clients: [ids], rounds: [n], probability, scale (attacks)}.
    faults: list[dict] = field(default_factory=list)
    attacks: list[dict] = field(default_factory=list)
    # The chosen strategy's and LoRA variant's own options, each written as a key of this
    # section (``federated.server_lr``, ``federated.mu``, ``federated.fedalt_mixer``...): the
    # fields of their options dataclasses (fedvlm/algorithms/<name>/server.py), whose
    # defaults apply to what is not set.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    batch_size: int = 32
    grad_accum: int = 1
    local_steps: int = 20
    local_epochs: float | None = None  # when set, overrides local_steps per client
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    schedule: str = "cosine"
    max_grad_norm: float = 1.0
    # Autocast of the forward pass (as HF Trainer's bf16=True / fp16=True): no, bf16, fp16
    # (with a loss scaler). The adapter trains in float32 whatever the base's model.dtype.
    mixed_precision: str = "no"
    # Batches are collated (tokenized, images processed) ahead of the step that uses them,
    # as HF Trainer's dataloader_* settings do: in worker processes (num_workers > 0) or in
    # a background thread (0), each prefetch_factor steps ahead (0: collate inside the step).
    # Pinned memory and non-blocking copies where the model is on a GPU. Batches are the
    # same either way: only when they are made moves.
    dataloader_num_workers: int = 0
    dataloader_prefetch_factor: int = 2
    dataloader_pin_memory: bool = True
    # Sample-level DP on the clients (DP-SGD through opacus, fedvlm/train/dp_sgd.py): each
    # example's gradient clipped to dp_sgd_max_grad_norm and Gaussian noise of
    # dp_sgd_noise_multiplier times that (or the multiplier that spends dp_sgd_target_epsilon
    # over the client's schedule); Poisson batches of expected size batch_size. Every
    # client, or only those listed in dp_sgd_clients.
    dp_sgd: bool = False
    dp_sgd_noise_multiplier: float | None = None
    dp_sgd_target_epsilon: float | None = None
    dp_sgd_max_grad_norm: float = 1.0
    dp_sgd_delta: float = 1e-5
    dp_sgd_clients: list[str] | None = None


@dataclass
class EvalConfig:
    batch_size: int = 100
    max_new_tokens: int = 4
    local: bool = True
    keep_last: int = 2
    # How answers are scored (fedvlm/core/answers.py): the official VQA evaluation's
    # vqaEval.py by default (answer_span whole, references official); fedvlm's friendlier
    # readings, which reports name: answer_span first_line or first_clause, references
    # processed (both processing steps on every reference, like the prediction).
    answer_span: str = "whole"
    references: str = "official"
    # What reports lead with: accuracy (the VQA evaluation's), or for generated free text
    # exact_match, rouge_l, bleu, or loss (on the held-out responses).
    metric: str = "accuracy"
    # question types whose answers are captions, scored by CIDEr-D, BLEU-4 and ROUGE-L too
    caption_types: list[str] = field(default_factory=lambda: ["caption"])


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every section as the YAML has it (the algorithms' options as keys of ``federated``)."""
        out = asdict(self)
        out["federated"] |= out["federated"].pop("options")
        return out

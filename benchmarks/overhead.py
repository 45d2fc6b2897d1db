"""Simulator overhead: one federated round's training part vs a bare peft loop.

    ratio = wall time of the simulator's round (configure -> fedvlm.client.train per client ->
            validate_update -> aggregate: ``engine.simulate.train_round``, i.e. a round minus evaluation,
            checkpointing and adapter saving)
          / wall time of a hand-written torch/peft/numpy loop doing the same optimizer steps
            on the same batches (same rows, same collation, same lr per step, same clipping)

Both variants collate their batches inside the timed region (``task.training_batch``), so the
ratio isolates what the simulator adds around the training itself.  The two variants run
in the same process on the same model, interleaved (A B, B A, A B, ...), and the ratio is
reported per alternation and as the median. Process CPU time of each variant and the
simulator's time outside ``train_local`` are printed too; on a shared machine they are
less sensitive to other load than the wall-clock ratio. Both variants run with the same torch thread count
(``--threads``, default 1). The final global adapters of the two variants are compared
(they should be bit-identical) to show that they did the same work.

The simulator variant replicates the body of ``run_simulation``'s round loop
(src/fedvlm/engine/simulate.py) call for call, with progress bars disabled as with
``run.progress=false``; nothing in src/ is refactored for the benchmark.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/overhead.py --clients 4 --steps 8 --batch-size 32 --repeats 3

Target: median ratio <= 1.10.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from fedvlm.config import load_config
from fedvlm.engine.client import steps_per_round
from fedvlm.engine.federation import build_federation
from fedvlm.seeds import Stream, seed_for, torch_seed
from fedvlm.engine.rundir import ClientStore
from fedvlm.engine.simulate import InProcessClients, make_strategy, train_round
from fedvlm.train.batches import stream_positions
from fedvlm.train.collate import to_device
from fedvlm.train.prefetch import Loading
from fedvlm.train.schedule import lr_at


def simulator_round(cfg, fed, store, round_num: int = 1):
    """The training part of one round of ``run_simulation``: its own ``train_round``."""
    strategy = make_strategy(cfg, len(fed.clients))
    state = strategy.initialize(fed.initial_adapter)
    rng = np.random.default_rng(seed_for(cfg.run.seed, Stream.SAMPLING))

    start, cpu_start = time.perf_counter(), time.process_time()
    participation = {cid: round_num - 1 for cid in fed.clients}
    state, record = train_round(cfg, InProcessClients(cfg, fed, store), list(fed.clients), strategy, state, rng,
                                round_num, participation)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    train_local_seconds = sum(m["seconds"] for m in record["clients"].values())
    return seconds, state.global_state, {"train_local_seconds": train_local_seconds, "cpu": cpu,
                                         "clients": list(record["clients"]),
                                         "bytes": (record["bytes_down"], record["bytes_up"])}


def bare_round(cfg, fed, client_ids, round_num: int = 1):
    """The same optimizer steps by hand: peft state dicts, torch AdamW, numpy mean.

    Only things that do not depend on the model or data are computed before the clock
    starts: the global adapter as tensors and the lr of each step (a list of floats).
    """
    t = cfg.train
    model, task, ds = fed.model, fed.task, fed.train_ds
    all_ids = list(fed.clients)
    n_steps = t.local_steps
    first_step = (round_num - 1) * n_steps
    total = cfg.federated.rounds * n_steps
    lrs = [lr_at(first_step + i, total, t.lr, t.warmup_steps, t.schedule) for i in range(n_steps)]
    global_tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fed.initial_adapter.items()}
    per_step = t.batch_size * t.grad_accum
    device, dtype = model.device, model.dtype

    start, cpu_start = time.perf_counter(), time.process_time()
    states, weights = [], []
    for cid in client_ids:
        k = all_ids.index(cid)
        set_peft_model_state_dict(model, global_tensors)
        # same dropout/randomness seed as the client unit (a no-op with lora.dropout=0)
        torch.manual_seed(torch_seed(seed_for(cfg.run.seed, Stream.TRAINING, k, round_num)))
        rows_all = fed.clients[cid].train
        order = stream_positions(len(rows_all), first_step * per_step, n_steps * per_step,
                                 seed_for(cfg.run.seed, Stream.BATCHES, k))
        rows_of = np.asarray(rows_all)[order]
        params = [p for p in model.parameters() if p.requires_grad]
        # what a speed-minded peft user writes: fused AdamW on a GPU
        fused = {"fused": True} if device.type == "cuda" else {}
        opt = torch.optim.AdamW(params, lr=lrs[0], weight_decay=t.weight_decay, **fused)
        model.train()
        examples = 0
        for s in range(n_steps):
            for g in opt.param_groups:
                g["lr"] = lrs[s]
            for m in range(t.grad_accum):
                lo = s * per_step + m * t.batch_size
                rows = ds[rows_of[lo:lo + t.batch_size].tolist()]
                batch = to_device(task.training_batch(rows), device, dtype)
                loss = model(**batch).loss / t.grad_accum
                loss.backward()
                loss.item()
                examples += batch["input_ids"].shape[0]
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()
        states.append({n: v.detach().float().cpu().numpy().copy() for n, v in get_peft_model_state_dict(model).items()})
        weights.append(examples)
    w = np.asarray(weights, dtype=np.float64)
    w /= w.sum()
    new_global = {
        n: sum(w_k * st[n].astype(np.float64) for w_k, st in zip(w, states)).astype(states[0][n].dtype)
        for n in states[0]
    }
    return time.perf_counter() - start, new_global, time.process_time() - cpu_start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="local optimizer steps per client")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="alternations (each times both variants)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for both variants (default 1: on a shared 2-core "
                         "machine 2 threads were ~25x slower per step; 0 keeps torch's default)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each variant first")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(None, [
        f"partition.num_clients={args.clients}", "partition.method=iid",
        "federated.fraction=1.0", f"train.local_steps={args.steps}",
        f"train.batch_size={args.batch_size}", "train.local_epochs=null",
        "run.progress=false", "run.baselines=[]",
    ])
    t0 = time.perf_counter()
    fed = build_federation(cfg)
    # both variants collate inside the step, so the ratio isolates the simulator's own cost
    # (benchmarks/gpu.py measures what collating ahead saves)
    fed.loading = Loading(prefetch_factor=0)
    assert all(steps_per_round(cfg, len(c.train)) == args.steps for c in fed.clients.values())
    print(f"python {sys.version.split()[0]}  torch {torch.__version__}  torch threads: "
          f"{torch.get_num_threads()}  (cpu count {os.cpu_count()}, loadavg {os.getloadavg()[0]:.2f})")
    print(f"setup (build_federation): {time.perf_counter() - t0:.1f}s; clients={args.clients} "
          f"steps={args.steps} batch={args.batch_size} -> {args.clients * args.steps} optimizer steps "
          f"per variant per alternation")

    store = ClientStore(Path(tempfile.mkdtemp(prefix="fedvlm-bench-")))

    def run_sim():
        return simulator_round(cfg, fed, store)

    sim_clients = None
    for _ in range(args.warmup):
        _, _, info = run_sim()
        sim_clients = info["clients"]
        bare_round(cfg, fed, sim_clients)
    if sim_clients is None:
        sim_clients = run_sim()[2]["clients"]

    rows = []
    for r in range(args.repeats):
        order = ("sim", "bare") if r % 2 == 0 else ("bare", "sim")
        res = {}
        for which in order:
            if which == "sim":
                sec, g_sim, info = run_sim()
                res["sim"], res["sim_train_local"] = sec, info["train_local_seconds"]
                res["sim_cpu"] = info["cpu"]
            else:
                res["bare"], g_bare, res["bare_cpu"] = bare_round(cfg, fed, sim_clients)
        diff = max(float(np.max(np.abs(g_sim[k] - g_bare[k]))) for k in g_sim)
        res["ratio"] = res["sim"] / res["bare"]
        res["cpu_ratio"] = res["sim_cpu"] / res["bare_cpu"]
        res["outside"] = res["sim"] - res["sim_train_local"]
        res["diff"] = diff
        rows.append(res)
        print(f"alternation {r + 1} ({order[0]} first): simulator {res['sim']:.3f}s "
              f"(train_local {res['sim_train_local']:.3f}s, around it {res['outside']:.3f}s)  "
              f"bare {res['bare']:.3f}s  wall ratio {res['ratio']:.3f}  "
              f"| cpu: simulator {res['sim_cpu']:.3f}s bare {res['bare_cpu']:.3f}s ratio {res['cpu_ratio']:.3f}  "
              f"| max|global_sim - global_bare| {diff:.2e}", flush=True)

    keys = ("sim", "bare", "ratio", "sim_cpu", "bare_cpu", "cpu_ratio", "outside")
    med = {k: statistics.median(x[k] for x in rows) for k in keys}
    per_step = med["bare"] / (args.clients * args.steps)
    print(f"median wall: simulator {med['sim']:.3f}s  bare {med['bare']:.3f}s  "
          f"({per_step * 1000:.0f} ms per bare step)  ratio {med['ratio']:.3f}  "
          f"(target <= 1.10: {'PASS' if med['ratio'] <= 1.10 else 'FAIL'})")
    print(f"median cpu:  simulator {med['sim_cpu']:.3f}s  bare {med['bare_cpu']:.3f}s  "
          f"ratio {med['cpu_ratio']:.3f}  (process CPU time: less sensitive to other load)")
    print(f"median simulator time outside train_local (configure, set/get adapter state, "
          f"validate, aggregate): {med['outside']:.3f}s = {100 * med['outside'] / med['sim']:.1f}% of its round")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``fedvlm`` command line: run | centralized | local | partition | merge | eval | predict | report | bench | flower."""

import argparse
import sys
import time
from pathlib import Path

from fedvlm.config import Config, check_in_process, load_config, save_config
from fedvlm.errors import FedvlmError, ModelError
from fedvlm.fileio import write_atomic


def _run_dir(cfg: Config, suffix: str = "") -> Path:
    """``output_dir/name``; an unnamed run is named for its strategy and start time, and the
    name is written into the config that the run directory keeps."""
    if cfg.run.name is None:
        cfg.run.name = f"{cfg.federated.strategy}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"
    elif suffix:
        cfg.run.name += suffix
    return Path(cfg.run.output_dir) / cfg.run.name


def _finish(cfg: Config, run_dir: Path) -> None:
    from fedvlm.reporting.report import read_baselines, read_metrics, summary_table, write_report

    report = write_report(run_dir)
    print(summary_table(read_metrics(run_dir), read_baselines(run_dir)))
    print(f"\nrun directory: {run_dir}\nreport: {report}\nfinal adapter: {run_dir / 'adapters' / 'final'}")


def cmd_run(args) -> None:
    from fedvlm.engine import rundir
    from fedvlm.engine.baselines import run_baselines
    from fedvlm.engine.federation import build_federation
    from fedvlm.engine.resume import check_resume, record_resume
    from fedvlm.engine.simulate import run_simulation

    # Every input (config, run directory, data, model) is checked before a file is written.
    if args.resume:
        if args.config is not None:
            args.overrides = [args.config, *args.overrides]
        resume = check_resume(Path(args.resume), args.overrides)
        cfg, run_dir = resume.cfg, resume.run_dir
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = _run_dir(cfg)
        replace = rundir.check_new_run_dir(run_dir, cfg.run.overwrite)
    if cfg.run.engine == "simulator":
        check_in_process(cfg)
    else:
        from fedvlm.flower.simulation import client_resources

        client_resources(cfg)  # what each virtual client reserves exists on this machine
    fed = build_federation(cfg)
    if args.resume:
        saved = (run_dir / rundir.CONFIG_FILE).read_text(encoding="utf-8")
        if resume.completed is None:  # stopped before round 1 completed: start again
            rundir.clear_run_outputs(run_dir)
        record_resume(resume)
    else:
        rundir.make_run_dir(run_dir, replace)
    resuming = bool(args.resume and resume.completed is not None)
    try:
        if cfg.run.engine == "flower-sim":
            from fedvlm.flower.simulation import run_flower_simulation

            if not (run_dir / rundir.CONFIG_FILE).exists():
                save_config(cfg, run_dir / rundir.CONFIG_FILE)
            run_flower_simulation(cfg, run_dir, resume=resuming)
        else:
            run_simulation(cfg, run_dir, resume=resuming, fed=fed)
    except Exception:
        # A resume that failed before completing a round leaves config.yaml as it found it.
        if args.resume and (rundir.latest_round(run_dir) or 0) <= (resume.completed or 0):
            write_atomic(run_dir / rundir.CONFIG_FILE, saved)
        raise
    run_baselines(cfg, fed, run_dir, cfg.run.baselines)
    _finish(cfg, run_dir)


def _cmd_baseline(name: str):
    def cmd(args) -> None:
        import json

        from fedvlm.engine import rundir
        from fedvlm.engine.baselines import run_baselines
        from fedvlm.engine.federation import build_federation

        cfg = load_config(args.config, args.overrides)
        run_dir = _run_dir(cfg, f"-{name}")
        replace = rundir.check_new_run_dir(run_dir, cfg.run.overwrite)
        fed = build_federation(cfg)
        rundir.make_run_dir(run_dir, replace)
        save_config(cfg, run_dir / rundir.CONFIG_FILE)
        results = run_baselines(cfg, fed, run_dir, [name])
        print(json.dumps(results[name], indent=2))
        print(f"results: {run_dir / 'baselines.json'}")

    return cmd


def cmd_partition(args) -> None:
    from fedvlm.data.partition_report import format_partition_table, label_histograms, plot_partition_heatmap
    from fedvlm.engine.federation import build_clients, load_datasets, peek_family

    cfg = load_config(args.config, args.overrides)
    try:
        family = peek_family(cfg)
    except ModelError:  # the model's config is out of reach (a hub id, offline): go by data
        family = None
    train_ds, _ = load_datasets(cfg, family)
    clients = build_clients(cfg, train_ds)
    parts = [c.train + c.test for c in clients.values()]
    labels, counts = label_histograms(train_ds, parts, cfg.partition.label_column)
    print(format_partition_table(labels, counts))
    out = Path(args.out or f"partition-{cfg.partition.method}.png")
    plot_partition_heatmap(labels, counts, out)
    print(f"heat-map: {out}")


def cmd_merge(args) -> None:
    from fedvlm.tools.merge import merge_adapters

    if args.weights and args.sizes:
        raise FedvlmError("give --weights or --sizes, not both")
    weights = args.weights or args.sizes or [1.0] * len(args.adapters)
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise FedvlmError(f"--weights/--sizes must be non-negative with a positive sum, got {weights}")
    out = merge_adapters([Path(a) for a in args.adapters], args.method, weights, args.rank, Path(args.out))
    print(f"merged {len(args.adapters)} adapters ({args.method}) into {out}")


def cmd_eval(args) -> None:
    import json

    from fedvlm.tools.inference import evaluate_adapter

    out = Path(args.out) if args.out else None
    if out is not None:  # checked before the evaluation, which may take long
        if out.exists():
            raise FedvlmError(f"--out {out}: already exists (fedvlm eval writes a new file; choose another name)")
        if not out.parent.is_dir():
            raise FedvlmError(f"--out {out}: no directory {out.parent} to write it in")
    result = evaluate_adapter(Path(args.adapter), args.config, args.overrides)
    text = json.dumps(result, indent=2)
    if out is not None:
        write_atomic(out, text + "\n")
    print(text)


def cmd_predict(args) -> None:
    from fedvlm.tools.inference import predict_one

    print(predict_one(Path(args.adapter), args.config, args.overrides, args.image, args.question, args.text))


def cmd_report(args) -> None:
    from fedvlm.reporting.report import write_report

    print(write_report(Path(args.run_dir)))


def cmd_bench(args) -> None:
    from fedvlm.tools.bench import load_bench, parse_shard, run_bench
    from fedvlm.reporting.bench_report import summarize_bench

    shard = parse_shard(args.shard) if args.shard else None
    bench = load_bench(args.bench_file)
    out = Path(args.out or f"runs/bench-{bench.path.stem}")
    if not args.summarize_only:
        run_bench(bench, out, shard=shard)
    written = summarize_bench(out, bench)
    print(f"results: {written['markdown']}, {written['csv']}\nplots: {out / 'plots'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedvlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p, required=False):
        p.add_argument("config", nargs=None if required else "?", help="YAML config (default: the embedded default job)")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides")
        return p

    run = with_config(sub.add_parser("run", help="run a federated job in the in-process simulator"))
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run after its last completed round")
    run.set_defaults(func=cmd_run)
    for name, helptext in [("centralized", "train on the pooled data (same samples)"),
                           ("local", "train each client alone (same samples)")]:
        with_config(sub.add_parser(name, help=helptext)).set_defaults(func=_cmd_baseline(name))
    part = with_config(sub.add_parser("partition", help="show per-client sizes and label histograms"))
    part.add_argument("--out", help="heat-map PNG path (default: partition-METHOD.png)")
    part.set_defaults(func=cmd_partition)
    merge = sub.add_parser("merge", help="merge trained PEFT LoRA adapters into one (one-shot)")
    merge.add_argument("adapters", nargs="+", help="PEFT adapter directories")
    merge.add_argument("--method", choices=["naive", "svd"], default="svd")
    merge.add_argument("--rank", type=int, help="rank of the merged adapter (svd; default: the largest)")
    merge.add_argument("--weights", type=float, nargs="+", help="explicit weights, one per adapter")
    merge.add_argument("--sizes", type=float, nargs="+", help="dataset sizes, one per adapter (weights by size)")
    merge.add_argument("--out", required=True, help="output directory (must not exist)")
    merge.set_defaults(func=cmd_merge)
    ev = sub.add_parser("eval", help="evaluate a saved adapter on a dataset with the run's metrics")
    ev.add_argument("adapter", help="adapter directory (a run's adapters/final, a personalized or merged adapter)")
    with_config(ev)
    ev.add_argument("--out", help="also write the result as JSON to this file")
    ev.set_defaults(func=cmd_eval)
    pred = sub.add_parser("predict", help="answer one question with a saved adapter")
    pred.add_argument("adapter", help="adapter directory")
    with_config(pred)
    pred.add_argument("--image", help="image file (image-text models)")
    pred.add_argument("--question", help="the question about the image")
    pred.add_argument("--text", help="the input text (text models)")
    pred.set_defaults(func=cmd_predict)
    rep = sub.add_parser("report", help="(re)write a run directory's report")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="run algorithms x partitions x seeds (resumable) and tabulate them")
    bench.add_argument("bench_file", metavar="CONFIG", help="bench YAML: base, algorithms, partitions, seeds")
    bench.add_argument("--out", help="bench directory (default: runs/bench-<CONFIG stem>)")
    bench.add_argument("--summarize-only", action="store_true", help="only rewrite results.csv/.md and plots")
    bench.add_argument("--shard", metavar="K/N", help="run only the K-th of N shares (start N processes, "
                       "K = 0..N-1, one per core; each owns whole algorithm x partition groups)")
    bench.set_defaults(func=cmd_bench)
    flower = sub.add_parser("flower", help="files for a deployment on Flower's SuperLink and SuperNodes")
    fsub = flower.add_subparsers(dest="flower_command", required=True)
    certs = fsub.add_parser("certs", help="a CA and the SuperLink's TLS certificate")
    certs.add_argument("out", help="directory for ca.crt, ca.key, server.pem, server.key")
    certs.add_argument("--host", action="append", default=[], help="an address the SuperNodes use for the SuperLink (repeatable)")
    certs.set_defaults(func=cmd_flower_certs)
    key = fsub.add_parser("node-key", help="a SuperNode's authentication key pair")
    key.add_argument("out", help="directory for NAME and NAME.pub")
    key.add_argument("name")
    key.set_defaults(func=cmd_flower_node_key)
    worker = fsub.add_parser("worker", help="keep a node's model loaded for the whole run (node config worker=SOCKET)")
    worker.add_argument("socket", help="Unix socket path the node's ClientApp forwards messages to")
    worker.set_defaults(func=cmd_flower_worker)
    app = fsub.add_parser("app", help="the app directory `flwr run` takes (fedvlm's ServerApp and ClientApp)")
    app.add_argument("out")
    app.set_defaults(func=cmd_flower_app)
    signer = fsub.add_parser("signing-key", help="an app signer's Ed25519 key and the nodes' trusted-entities line for it")
    signer.add_argument("out", help="directory for NAME (private) and NAME.trusted.yaml")
    signer.add_argument("name", help="the key id nodes trust it by")
    signer.set_defaults(func=cmd_flower_signing_key)
    sign = fsub.add_parser("sign-app", help="sign a FAB (from `flwr build`) as `flwr app review` does")
    sign.add_argument("fab", help="the .fab file; its signatures go to FAB.signatures.json beside it")
    sign.add_argument("--key", required=True, help="the signer's private key (fedvlm flower signing-key)")
    sign.add_argument("--key-id", help="the id nodes trust the key by (default: the key file's name)")
    sign.set_defaults(func=cmd_flower_sign_app)
    index = fsub.add_parser("app-index", help="serve a directory of signed FABs to a SuperLink as Flower Hub does")
    index.add_argument("directory", help="the .fab files and their .signatures.json")
    index.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    index.add_argument("--port", type=int, default=9095)
    index.set_defaults(func=cmd_flower_app_index)
    submit = fsub.add_parser("submit", help="flwr run an app, stream its log, exit nonzero unless the run completed")
    submit.add_argument("app", help="the app directory (fedvlm flower app), or a signed app's @fedvlm/fedvlm-app==1.0.0")
    submit.add_argument("superlink", help="the SuperLink's connection name in Flower's config")
    submit.add_argument("--run-config", required=True, help="a TOML file, or Flower's \"key='value' ...\" string")
    submit.set_defaults(func=cmd_flower_submit)
    return parser


def cmd_flower_certs(args) -> None:
    from fedvlm.flower.deploy import make_certificates

    paths = make_certificates(Path(args.out), args.host)
    print("\n".join(f"{name}: {path}" for name, path in paths.items()))
    print(f"SuperLink: flower-superlink --host 0.0.0.0 --port 9093 --ssl-ca-certfile {paths['ca.crt']} "
          f"--ssl-certfile {paths['server.pem']} --ssl-keyfile {paths['server.key']} --enable-supernode-auth "
          "--disable-runtime-dependency-installation")


def cmd_flower_node_key(args) -> None:
    from fedvlm.flower.deploy import make_node_key

    private, public = make_node_key(Path(args.out), args.name)
    print(f"on the SuperLink's side: flwr supernode register {public} <connection>")
    print(f"on the node: flower-supernode --superlink <host:port> --root-certificates ca.crt "
          f"--auth-supernode-private-key {private} --node-config \"data-path='...' state-dir='...'\"")


def cmd_flower_signing_key(args) -> None:
    from fedvlm.flower.signed_apps import make_signing_key

    private, trusted = make_signing_key(Path(args.out), args.name)
    print(f"signer: fedvlm flower sign-app <app.fab> --key {private}   (keep {private} with the signer only)")
    print(f"each node: flower-supernode ... --trusted-entities {trusted}   (or that line in the node's own file)")


def cmd_flower_sign_app(args) -> None:
    from fedvlm.flower.signed_apps import sign_fab

    key = Path(args.key)
    out = sign_fab(Path(args.fab), key, args.key_id or key.name)
    print(f"signed {args.fab}: {out}")


def cmd_flower_app_index(args) -> None:
    from fedvlm.flower.signed_apps import AppIndex

    index = AppIndex(Path(args.directory), args.host, args.port)
    print(f"app index on http://{args.host}:{index.port} serving {args.directory}; start the SuperLink with "
          f"FLWR_SUPERGRID_API_URL=http://{args.host}:{index.port} and run apps by spec "
          "(flwr run @fedvlm/fedvlm-app==1.0.0 <connection>)", flush=True)
    try:
        index.server.serve_forever()
    finally:
        index.server.server_close()


def cmd_flower_worker(args) -> None:
    from fedvlm.flower.worker import serve

    print(f"fedvlm worker listening on {args.socket}", flush=True)
    serve(args.socket)


def cmd_flower_app(args) -> None:
    from fedvlm.flower.deploy import write_app

    out = write_app(Path(args.out))
    print(f"fedvlm flower submit {out} <connection> --run-config \"config='job.yaml' run_dir='runs/<name>'\"")
    print(f"(or Flower's own: flwr run {out} <connection> --run-config ... --stream, which exits 0 even if the run failed)")


def cmd_flower_submit(args) -> None:
    from fedvlm.flower.submit import submit

    run_id = submit(Path(args.app), args.superlink, args.run_config)
    print(f"run {run_id} completed")


def _split_config_arg(args) -> None:
    """``fedvlm run train.lr=1e-3`` has no config file: the first positional is an override."""
    if getattr(args, "config", None) and "=" in args.config and not Path(args.config).exists():
        args.overrides = [args.config, *args.overrides]
        args.config = None


def _quiet_libraries() -> None:
    """Keep the terminal to fedvlm's own progress: no per-load weight bars from transformers,
    no deprecation notice peft triggers inside transformers on every model wrap, no
    import-time notice from bitsandbytes (via peft) about hub kernels it cannot fetch, and
    no warning from dp-accounting for each Renyi order it leaves out (conservatively)."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's notes on RDP orders it skips

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    _split_config_arg(args)
    try:
        args.func(args)
    except FedvlmError as e:
        print(f"fedvlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedvlm: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

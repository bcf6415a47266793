"""Command line: ``nni-diffusionnag {train-prior, train-meta, generate, report, bench}``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ["main"]

_logger = logging.getLogger("nni_diffusionnag.cli")


def _count(low: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``low`` (checked before any work, with the option named by argparse)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is invalid: must be >= {low}")
        return value
    parse.__name__ = f"int >= {low}"
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be a finite number > 0")
    return value


def _device(text: str) -> str:
    from .search.config import check_device

    try:
        check_device("--device", text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("DiffusionNAG: ", "")) from None
    return text


def _writable(path: str, folder: bool = False) -> None:
    """Fail now, not after the work, if ``path`` (a file, or a folder) cannot be written."""
    target = Path(path)
    where = target if folder else target.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".nni-diffusionnag-write-test-{time.time_ns()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise CliError(f"cannot write {'the folder' if folder else 'the file'} {path!r}: {err.strerror or err}") from None
    if not folder and target.is_dir():
        raise CliError(f"{path!r} is a folder; give a file name")


class CliError(Exception):
    """A usage error found before any work: printed as one line."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", default="nasbench201", help="search space name (default: nasbench201)")
    p.add_argument("--device", type=_device, default="auto",
                   help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--seed", type=_count(0), default=0)


def _cmd_train_prior(args: argparse.Namespace) -> int:
    import torch

    from .prior.model import DiffusionPrior
    from .space import get_space
    from .prior.training import TrainConfig, train_prior

    space = get_space(args.space)
    _writable(args.output)
    data = space.enumerate_types()
    enumerable = data is not None
    rng = np.random.default_rng(args.seed)
    if not enumerable:  # too big to enumerate (OFA MobileNetV3: ~2e19): random architectures as NNI draws them
        data = space.random_types(args.train_size or 100_000, rng)
    elif args.train_size:
        data = data[rng.choice(len(data), size=min(args.train_size, len(data)), replace=False)]
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)
    prior = DiffusionPrior(space, device=args.device)
    torch.manual_seed(args.seed)
    _logger.info("training a prior for %s on %d graphs (%s), %d steps -> %s",
                 space.name, len(data), prior.device, config.steps, args.output)
    if not enumerable:
        prior.meta["train_data"] = f"{len(data)} random architectures (seed {args.seed})"
    else:
        prior.meta["train_types"] = data.astype(np.uint8).tolist() if args.train_size else "all"
    t0 = time.time()
    train_prior(prior, data, config, checkpoint=args.output, resume=not args.no_resume)
    if args.strip:  # EMA weights only: the small file we ship as package data
        prior.meta["train_seconds"] = round(time.time() - t0, 1)
        prior.save(args.output)
    print(f"prior saved to {args.output} ({Path(args.output).stat().st_size / 1e6:.2f} MB)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .prior.model import DiffusionPrior, SamplerConfig
    from .prior.quality import format_report, quality_report
    from .space import get_space

    space = get_space(args.space)
    if args.output != "-":
        _writable(args.output)  # before sampling: an unwritable file must not cost the samples
    prior = DiffusionPrior.load(args.prior, space, args.device) if args.prior else DiffusionPrior.shipped(space, args.device)
    config = SamplerConfig(num_steps=args.steps, batch_size=args.batch_size)
    t0 = time.time()
    batch = prior.generate(args.n, config, seed=args.seed, progress=True)
    seconds = time.time() - t0
    out = sys.stdout if args.output == "-" else open(args.output, "w")
    try:
        for types, valid in zip(batch.types, batch.valid):
            row = {"sample": space.types_to_sample(types), "valid": bool(valid)}
            if hasattr(space, "types_to_arch"):
                row["arch"] = space.types_to_arch(types)
            out.write(json.dumps(row) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    train = prior.meta.get("train_types")
    train_types = space.enumerate_types() if train == "all" else (np.asarray(train) if train is not None else None)
    report = quality_report(space, batch.types, batch.valid, train_types)
    print(format_report(report, space), file=sys.stderr)
    if train == "all":
        print("(novelty is 0 by construction: this prior was trained on every graph of the space)", file=sys.stderr)
    print(_freq_table(report, space), file=sys.stderr)
    print(f"generated {args.n} graphs in {seconds:.1f} s on {prior.device} "
          f"({config.num_steps} PC steps){'' if args.output == '-' else ' -> ' + args.output}", file=sys.stderr)
    return 0


def _freq_table(report: dict, space) -> str:
    """Per-node type frequencies, only the legal types of nodes that have a choice."""
    legal = space.legal
    cols = [v for v in range(space.num_types) if legal[:, v].any() and legal[legal[:, v]].sum(1).min() > 1]
    head = "node  " + " ".join(f"{space.node_types[v][:12]:>12}" for v in cols) + "     TV"
    rows = [head]
    for i in range(space.num_nodes):
        if legal[i].sum() > 1:
            rows.append(f"{i:>4}  " + " ".join(f"{report['freq'][i][v]:>12.3f}" for v in cols) + f"  {report['tv'][i]:.3f}")
    return "\n".join(rows)


def _parse_task(spec: str):
    """``NAME=CSV[:COLUMN][@DATASET]`` -> (name, csv, column or None, dataset reference or None)."""
    if "=" not in spec:
        raise SystemExit(f"--task expects NAME=CSV[:COLUMN][@DATASET], got {spec!r}")
    name, rest = spec.split("=", 1)
    dataset = None
    if "@" in rest:
        rest, dataset = rest.rsplit("@", 1)
    path, column = rest, None
    if not Path(rest).is_file() and ":" in rest:
        path, column = rest.rsplit(":", 1)
    if not name or not Path(path).is_file():
        raise SystemExit(f"--task {spec!r}: no CSV file at '{path}'")
    return name, path, column, dataset


def _load_task_images(ref: str):
    """A task's images: ``digits[:C1,C2,...]`` (scikit-learn's digits, optionally a class subset)
    or a torch file holding ``(x [n, 3, 32, 32], y [n])``."""
    import torch

    if ref == "digits" or ref.startswith("digits:"):
        from .integration.evaluators import load_digits_tensors

        x, y, _, _ = load_digits_tensors(32, seed=0)
        if ":" in ref:
            keep = torch.isin(y, torch.tensor([int(c) for c in ref.split(":", 1)[1].split(",")]))
            x, y = x[keep], y[keep]
        return x, y
    if not Path(ref).is_file():
        raise SystemExit(f"dataset reference {ref!r}: expected 'digits[:classes]' or a torch file with (x, y)")
    data = torch.load(ref, weights_only=True)
    return (data["x"], data["y"]) if isinstance(data, dict) else tuple(data)


def _cmd_train_meta(args: argparse.Namespace) -> int:
    import dataclasses

    from .transfer.meta import DEFAULT_META_CONFIG, read_task_csv, train_meta
    from .space import get_space

    space = get_space(args.space)
    _writable(args.output)
    tasks, images = {}, {}
    for spec in args.task:
        name, path, column, dataset = _parse_task(spec)
        if name in tasks:
            raise SystemExit(f"task {name!r} given twice")
        try:
            tasks[name] = read_task_csv(space, path, column)
        except ValueError as err:
            raise SystemExit(f"--task {spec!r}: {err}") from None
        if dataset is not None:
            images[name] = _load_task_images(dataset)
        _logger.info("task %s: %d rows from %s%s", name, len(tasks[name][1]), path, f" [{column}]" if column else "")
    if images and len(images) != len(tasks):
        raise SystemExit(f"give every task a dataset (@DATASET) or none; missing for {sorted(set(tasks) - set(images))}")
    if images:  # a dataset-aware meta-predictor f(x_t, t, D)
        from .transfer.dataset_encoding import RandomConvExtractor, encode_dataset, train_dataset_meta

        extractor = RandomConvExtractor(seed=args.seed)
        task_list = [(*tasks[n], encode_dataset(images[n], extractor, images_per_class=16, seed=i))
                     for i, n in enumerate(tasks)]
        train_dataset_meta(space, task_list, steps=args.steps, seed=args.seed, extractor=extractor,
                           output=args.output, progress=True)
        print(f"dataset-aware meta-predictor for {space.name} on tasks {', '.join(tasks)} saved to {args.output}")
        return 0
    device = "cpu" if args.device == "auto" else args.device
    if args.per_task:
        from .transfer.sources import DEFAULT_SOURCE_CONFIG, train_sources

        if len(tasks) < 2:
            raise SystemExit("--per-task needs at least two --task tables (one table is a plain meta-surrogate)")
        config = dataclasses.replace(DEFAULT_SOURCE_CONFIG, steps=args.steps, hidden=args.hidden,
                                     ensemble=args.ensemble or DEFAULT_SOURCE_CONFIG.ensemble)
        sources = train_sources(space, tasks, config, seed=args.seed, output=args.output, progress=True,
                                device=device, labels=args.labels)
        print(f"{len(tasks)} source surrogates for {space.name} ({', '.join(tasks)}; weighed by the target's "
              f"results during the search) saved to {args.output} ({sources.info['seconds']} s)")
        return 0
    config = dataclasses.replace(DEFAULT_META_CONFIG, steps=args.steps, hidden=args.hidden,
                                 ensemble=args.ensemble or DEFAULT_META_CONFIG.ensemble)
    meta = train_meta(space, tasks, config, seed=args.seed, output=args.output, progress=True,
                      device=device, labels=args.labels)
    print(f"meta-surrogate for {space.name} on tasks {', '.join(tasks)} saved to {args.output} "
          f"(train mse {meta.info['train_mse']:.3f}, {meta.info['seconds']} s)")
    return 0


def _bench_seeds(text: str):
    """--seeds: a count ``N`` (an int, as every bench takes it) or, for ``bench hpo``, ``A-B`` / ``a,b,c``."""
    if text.strip().isdigit():
        return int(text)
    from .bench.hpo import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _check_names(command: str, noun: str, text: str, allowed) -> None:
    """``CliError`` naming every entry of the comma list ``text`` that is not in ``allowed``."""
    unknown = [name for name in text.split(",") if name not in allowed]
    if unknown:
        raise CliError(f"{command}: unknown {noun} {unknown}; choose from {list(allowed)}")


SPEED_SPACES = "nasbench201,mobilenetv3,proxylessnas,constrained,nbgraph"
STRATEGIES_DEFAULT = "DiffusionNAG,Random,RegularizedEvolution,TPE"


def _check_ablations(command: str, strategies: str, known: Sequence[str]) -> None:
    """``--strategies``: known names, or DiffusionNAG ablations whose settings the strategy accepts."""
    from .bench.search import ablation_kwargs
    from .search.config import SearchConfig

    names = strategies.split(",")
    unknown = [n for n in names if n not in known and not n.startswith("DiffusionNAG:")]
    if unknown:
        raise CliError(f"{command}: unknown strategies {unknown}; choose from {list(known)} or an "
                       "ablation 'DiffusionNAG:key=value:...' (e.g. DiffusionNAG:local_fraction=0)")
    for name in names:
        if name.startswith("DiffusionNAG:"):  # an ablation's settings are checked like the strategy's
            try:
                SearchConfig.from_kwargs(**ablation_kwargs(name))
            except ValueError as err:
                raise CliError(f"{command}: strategy {name!r}: {err}") from None


def _check_bench(args: argparse.Namespace) -> None:
    """Every argument of a bench run, before its first run."""
    if args.which == "search":
        from .bench.search import STRATEGIES

        _check_ablations("bench search", args.strategies, STRATEGIES)
    elif args.concurrency != 1:
        raise CliError(f"--concurrency is for bench search only, not bench {args.which}")
    if args.merge and args.which != "nbgraph":
        raise CliError(f"--merge is for bench nbgraph only, not bench {args.which}")
    if args.which == "hpo":
        from .bench.hpo import TUNERS

        _check_names("bench hpo", "tuners", args.tuners, TUNERS)
    if args.which == "nbgraph":
        from .bench import nbgraph

        try:
            nbgraph.check_installed()
        except ValueError as err:
            raise CliError(str(err)) from None
        _check_ablations("bench nbgraph", args.strategies, nbgraph.STRATEGIES)
        _check_names("bench nbgraph", "datasets", args.datasets, nbgraph.ALL_DATASETS)
    if args.which == "nbgraph-transfer":
        from .bench import nbgraph, nbgraph_transfer

        try:
            nbgraph.check_installed()
        except ValueError as err:
            raise CliError(str(err)) from None
        if args.strategies == STRATEGIES_DEFAULT:
            args.strategies = ",".join(nbgraph_transfer.STRATEGIES)
        _check_names("bench nbgraph-transfer", "strategies", args.strategies, nbgraph_transfer.ALL_STRATEGIES)
        _check_names("bench nbgraph-transfer", "datasets", args.datasets, nbgraph.DATASETS)
        if len(args.datasets.split(",")) < 2:
            raise CliError("bench nbgraph-transfer: --datasets needs at least two (each is left out in turn)")
    if args.which == "speed":
        from .bench.speed import SPACES

        _check_names("bench speed", "spaces", args.spaces, SPACES)
    if args.which == "latency":
        from .bench.latency import SPACES as LATENCY_SPACES

        if args.spaces == SPEED_SPACES:  # the parser's default is the speed bench's list
            args.spaces = "nasbench201"
        _check_names("bench latency", "spaces", args.spaces, LATENCY_SPACES)
    if args.which == "multiobjective":
        from .bench.multiobjective import COSTS, METHODS
        from .bench.search import ablation_base

        # an ablation 'DiffusionNAG-MO:key=value' (NB201 costs) is checked by its method's name
        _check_names("bench multiobjective", "methods", ",".join(map(ablation_base, args.methods.split(","))),
                     METHODS)
        from .bench.multiobjective import method_settings
        from .search.config import SearchConfig

        for name in args.methods.split(","):
            if ":" in name:  # its settings are checked as the strategy checks them
                try:
                    settings = method_settings(name)
                    mo = name.startswith("DiffusionNAG-MO")
                    SearchConfig.from_kwargs(**settings, **({"objectives": ["params"]} if mo else {}))
                    # what SearchCore checks once the batch size is picked (5 with objectives, 2 without)
                    batch = settings.get("batch_size") or (5 if mo else 2)
                    if settings.get("n_candidates", 100) < batch:
                        raise ValueError(f"n_candidates={settings['n_candidates']} must be >= the batch size {batch}")
                except ValueError as err:
                    raise CliError(f"bench multiobjective: method {name!r}: {err}") from None
        _check_names("bench multiobjective", "costs", args.costs, COSTS)
        if {"NSGAII", "TPE"} & set(args.methods.split(",")):
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise CliError("bench multiobjective: the NSGAII and TPE methods need Optuna: "
                               "pip install 'nni-diffusionnag[bench]'") from None
        if "latency" in args.costs.split(","):
            from .bench import nbgraph

            try:
                nbgraph.check_installed()
            except ValueError as err:
                raise CliError(f"bench multiobjective --costs latency (NAS-Bench-Graph): {err}") from None
            _check_names("bench multiobjective", "datasets", args.datasets, nbgraph.ALL_DATASETS)
    needs_table = args.which in ("search", "transfer", "guidance", "durability") or (
        args.which == "multiobjective" and set(args.costs.split(",")) & {"params", "flops"})
    if needs_table:
        if not args.table:
            raise CliError(f"bench {args.which} needs --table PATH (e.g. ../shared/data/nb201/nb201_test_acc.csv)")
        if not Path(args.table).is_file():
            raise CliError(f"bench {args.which}: --table {args.table!r} is not a file")
    if args.prior and not Path(args.prior).is_file():
        raise CliError(f"--prior {args.prior!r} is not a file")
    _writable(args.output, folder=True)


def _cmd_bench(args: argparse.Namespace) -> int:
    _check_bench(args)
    if isinstance(args.seeds, list) and args.which not in ("hpo", "nbgraph", "nbgraph-transfer", "multiobjective"):
        raise SystemExit(f"bench {args.which}: --seeds takes a number of seeds (a list or range is for bench hpo, "
                         "nbgraph and multiobjective)")
    if args.budget is None:
        args.budget = {"hpo": 60, "durability": 50, "speed": 20, "nbgraph": 200, "nbgraph-transfer": 20, "multiobjective": 100, "latency": 250}.get(args.which, 300)
    if args.which == "latency":
        import json

        from .bench.latency import run_latency_bench

        result = run_latency_bench(args.output, args.spaces.split(","), n=args.budget or 250, table=args.table,
                                   column=args.column)
        print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=str)[:4000])
        return 0
    if args.which == "multiobjective":
        from .bench.multiobjective import run_multiobjective_bench, summarize

        seeds = args.seeds if isinstance(args.seeds, list) else list(range(args.seeds if args.seeds else 10))
        result = run_multiobjective_bench(args.table, args.output, args.costs.split(","), args.column, seeds,
                                          args.budget, args.methods.split(","), device=args.device,
                                          datasets=args.datasets.split(","))
        print(summarize(result))
        return 0
    if args.which == "durability":
        from .bench.durability import run_durability_bench, summarize

        result = run_durability_bench(args.table, args.output, budget=args.budget or 50)
    elif args.which == "hpo":
        from .bench.hpo import run_hpo_bench, summarize

        result = run_hpo_bench(args.tuners.split(","), args.seeds if args.seeds is not None else 10, args.budget,
                               args.output, device=args.device)
    elif args.which == "speed":
        from .bench.speed import run_speed_bench, summarize

        result = run_speed_bench(args.output, args.spaces.split(","), device=args.device, n_results=args.budget)
    elif args.which == "nbgraph" and args.merge:
        from .bench.nbgraph import merge_results, summarize

        try:
            result = merge_results(args.merge.split(","), args.output)
        except ValueError as err:
            raise CliError(f"bench nbgraph --merge: {err}") from None
    elif args.which == "nbgraph":
        from .bench.nbgraph import run_nbgraph_bench, summarize

        result = run_nbgraph_bench(args.output, args.datasets.split(","), args.seeds if args.seeds is not None else 10,
                                   args.budget, args.strategies.split(","), device=args.device)
    elif args.which == "nbgraph-transfer":
        from .bench.nbgraph_transfer import run_nbgraph_transfer_bench, summarize

        result = run_nbgraph_transfer_bench(args.output, args.datasets.split(","),
                                            args.seeds if args.seeds is not None else 10, args.budget,
                                            args.strategies.split(","), device=args.device, meta_steps=args.meta_steps)
    elif args.which == "transfer":
        from .bench.transfer import run_transfer_bench, summarize

        if not args.table:
            raise SystemExit("bench transfer needs --table PATH (e.g. ../shared/data/nb201/nb201_test_acc.csv)")
        result = run_transfer_bench(args.table, args.output, seeds=args.seeds or 10, budget=args.budget,
                                    prior_path=args.prior, device=args.device)
    elif args.which == "generate":
        from .bench.generate import run_generate_bench, summarize

        result = run_generate_bench(args.output, args.space, n=args.n, seeds=args.seeds or 3, prior_path=args.prior,
                                    device=args.device)
    elif args.which == "mobilenetv3":
        from .bench.mobilenetv3 import run_mbv3_bench, summarize

        result = run_mbv3_bench(args.output, seeds=args.seeds or 5, budget_mflops=args.flops_budget,
                                prior_path=args.prior, device=args.device)
    elif args.which == "guidance":
        from .bench.guidance import run_guidance_bench, summarize

        if not args.table:
            raise SystemExit("bench guidance needs --table PATH (e.g. ../shared/data/nb201/nb201_test_acc.csv)")
        result = run_guidance_bench(args.table, args.output, seeds=args.seeds or 5, prior_path=args.prior, device=args.device)
    else:
        from .bench.search import run_search_bench, summarize

        if not args.table:
            raise SystemExit("bench search needs --table PATH (e.g. ../shared/data/nb201/nb201_test_acc.csv)")
        result = run_search_bench(args.table, args.column, args.output, seeds=args.seeds or 10, budget=args.budget,
                                  strategies=args.strategies.split(","), prior_path=args.prior, device=args.device,
                                  stop_at_optimum=not args.full_budget, concurrency=args.concurrency)
    print(summarize(result))
    print(f"results written under {args.output}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .integration.check import check_config

    print(check_config(args.config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-diffusionnag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-prior", help="train the diffusion prior of a space (resumable)")
    _add_common(p)
    p.add_argument("--output", required=True, help="checkpoint path; an unfinished one is resumed")
    p.add_argument("--steps", type=_count(1), default=6000)
    p.add_argument("--batch-size", type=_count(1), default=256)
    p.add_argument("--lr", type=_number, default=1e-3)
    p.add_argument("--checkpoint-every", type=_count(1), default=500)
    p.add_argument("--train-size", type=_count(0), default=0, help="train on a random subset of this many graphs (0: all, or 100,000 random ones "
                   "for a space too big to enumerate)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --output exists")
    p.add_argument("--strip", action="store_true", help="drop the optimiser state at the end (for shipping)")
    p.set_defaults(func=_cmd_train_prior)

    p = sub.add_parser("generate", help="generate architectures with a prior and print quality figures")
    _add_common(p)
    p.add_argument("-n", type=_count(1), default=1000, help="number of architectures")
    p.add_argument("--output", default="-", help="JSON lines file ('-': stdout)")
    p.add_argument("--prior", default=None, help="prior checkpoint (default: the one shipped for --space)")
    p.add_argument("--steps", type=_count(1), default=100, help="predictor-corrector steps")
    p.add_argument("--batch-size", type=_count(1), default=1000)
    p.set_defaults(func=_cmd_generate)

    from .report.command import HELP, add_report_arguments, run_report  # light: matplotlib loads when it runs

    p = sub.add_parser("report", help=HELP)
    add_report_arguments(p)
    p.set_defaults(func=run_report)

    p = sub.add_parser("check", help="check an nnictl experiment config (DiffusionNAG's classArgs and the search space) "
                                      "before `nnictl create`, which in NNI 3.0 does not")
    p.add_argument("config", help="the experiment's YAML config file")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("train-meta", help="train a meta-surrogate on task tables (transferable NAS)")
    _add_common(p)
    p.add_argument("--task", action="append", required=True, metavar="NAME=CSV[:COLUMN][@DATASET]",
                   help="a task table: CSV with an 'arch' column and a metric column (repeatable); "
                        "@DATASET (digits[:classes] or a torch file with (x, y)) makes the meta-predictor dataset-aware")
    p.add_argument("--output", required=True, help="checkpoint path")
    p.add_argument("--steps", type=_count(1), default=1500)
    p.add_argument("--ensemble", type=_count(1), default=None, help="members per surrogate (default 5; --per-task 2)")
    p.add_argument("--hidden", type=_count(1), default=32)
    p.add_argument("--labels", choices=["rank", "zscore"], default="rank", help="per-task label standardisation")
    p.add_argument("--per-task", action="store_true",
                   help="one surrogate per task instead of one for their average; the search weighs each by how "
                        "well it ranks the target's results so far (tasks that disagree with each other)")
    p.set_defaults(func=_cmd_train_meta)

    p = sub.add_parser("bench", help="benchmarks behind docs/benchmarks.md (JSON + PNG)")
    p.add_argument("which", choices=["generate", "guidance", "search", "transfer", "mobilenetv3", "hpo", "durability",
                                      "nbgraph", "nbgraph-transfer", "speed", "multiobjective", "latency"])
    p.add_argument("--space", default="nasbench201")
    p.add_argument("--table", default=None, help="NB201 table CSV (guidance, search, multiobjective; latency: also "
                   "runs a latency-constrained NB201 search)")
    p.add_argument("--column", default="cifar10_test_acc", help="table column to maximise (search)")
    p.add_argument("--output", default="bench-out", help="folder for the JSON and PNG")
    p.add_argument("--prior", default=None, help="prior checkpoint (default: the space's default prior, e.g. NB201's exact one in search)")
    p.add_argument("--seeds", type=_bench_seeds, default=None,
                   help="number of seeds (default per benchmark); hpo and nbgraph also take a range or list: 0-9, 1,3,5")
    p.add_argument("--budget", type=_count(1), default=None,
                   help="architectures per search (search, transfer; default 300; nbgraph 200), trials per run (hpo; default 60), results the surrogate is fitted on (speed; default 20)")
    p.add_argument("--strategies", default=STRATEGIES_DEFAULT,
                   help="search, nbgraph, nbgraph-transfer (default: DiffusionNAG+transfer,DiffusionNAG,"
                        "RegularizedEvolution; also DiffusionNAG+pooled): comma list")
    p.add_argument("--meta-steps", type=_count(1), default=1500,
                   help="nbgraph-transfer: training steps of each source surrogate")
    p.add_argument("--full-budget", action="store_true",
                   help="search: keep going after the table optimum (for timing a whole run)")
    p.add_argument("--concurrency", type=_count(1), default=1,
                   help="search: trials in flight, as a training service with that many workers and trials of "
                        "equal length (default 1)")
    p.add_argument("--datasets", default="cora,citeseer,pubmed,cs,physics,photo",
                   help="nbgraph, nbgraph-transfer, multiobjective --costs latency: comma list of NAS-Bench-Graph "
                        "datasets")
    p.add_argument("--merge", default=None, metavar="JSON,JSON,...",
                   help="nbgraph: summarise and plot these nbgraph.json files as one result (runs split over "
                        "processes) instead of running")
    p.add_argument("--spaces", default=SPEED_SPACES,
                   help="speed: comma list of spaces; latency: nasbench201,mobilenetv3")
    p.add_argument("--tuners", default="TPE,Anneal,Random,DiffusionNAG", help="hpo: comma list of tuners")
    p.add_argument("--methods", default="DiffusionNAG-MO,DiffusionNAG-sum,Random,NSGAII,TPE",
                   help="multiobjective: comma list of methods")
    p.add_argument("--costs", default="params,flops", help="multiobjective: comma list of params, flops (NB201, "
                   "needs --table) and latency (NAS-Bench-Graph validation x latency on --datasets)")
    p.add_argument("-n", type=_count(1), default=1000, help="graphs per run (generate)")
    p.add_argument("--flops-budget", type=_number, default=220.0, help="MFLOPs budget (mobilenetv3)")
    p.add_argument("--device", type=_device, default="cpu", help="generator device (default cpu, for comparable timings)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .exceptions import DiffusionNAGError

    try:
        return int(args.func(args) or 0)
    except (CliError, DiffusionNAGError, ValueError, FileNotFoundError, PermissionError, OSError) as err:
        if args.debug:
            raise
        print(f"nni-diffusionnag: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

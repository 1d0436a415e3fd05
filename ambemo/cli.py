"""The ``ambemo`` command.

    ambemo train [experiment=NAME] [group=option ...] [key=value | --key=value ...]
    ambemo train experiment=grpoz_cot --seeds 3        # seeds seed, seed+1, seed+2: one run folder each
    ambemo train experiment=sft_cot --print-config     # show the resolved config and exit
    ambemo train --help                                # every key with its type, default and doc
    ambemo folds experiment=NAME [key=value ...] [--folds 1,2,3,4,5]  # IEMOCAP sessions, fold-averaged row
    ambemo score PRED.jsonl [GOLD.jsonl] [--out FILE]  # score any system's predictions
    ambemo data [OUT_DIR] [--seed N]                   # generate the built-in synthetic corpus
    ambemo curate CORPUS --store STORE.jsonl [--dry-run] [--max-cost USD] ...  # verified CoTs (--help)
    ambemo data summary data=NAME [key=value ...] [--out FILE.json]  # splits, priors, durations, skips
    ambemo report [RUN_DIR ...]                        # results table with bootstrap 95 % intervals
    ambemo report --seeds [--baseline EXP]             # mean +- sd over seeds; paired differences (--help)
    ambemo probe-reasoning RUN [--out FILE.json]       # does the model's own reasoning inform its read-out?
    ambemo sweep NAME|FILE.yaml [--trials N] [key=value ...]  # a W&B sweep file, run locally (optuna)
    ambemo predict MODEL AUDIO... [--out FILE.jsonl]   # MODEL: export folder, run folder or latest:NAME (--help)
    ambemo export RUN_DIR OUT_DIR                      # a model folder for applications (adapter, card, threshold)
    ambemo serve MODEL [--host H --port P ...]         # HTTP API with dynamic batching (--help)
    ambemo demo MODEL [--port P]                       # a page to upload or record a clip and see the prediction
    ambemo list                                        # experiments and building blocks
    ambemo bench [--size tiny|7b] [--group K] [--new-tokens N] [--json F]  # step and rollout speed (--help)

A problem with the input (a setting, a file, a run folder, a checkpoint, an output path) ends
with one line ``ambemo: <what>: <why>. <what to do>`` and exit status 2 (130 when interrupted);
a traceback means a bug. ``ambemo --debug COMMAND ...`` shows the traceback in every case.

``--key=value`` is accepted everywhere ``key=value`` is, because that is what a W&B sweep agent
passes to the training command. ``AMBEMO_OVERRIDES="key=value ..."`` in the environment adds
overrides to every ``ambemo train`` before its own arguments (which win): how ``ambemo sweep`` and
tests pass fixed settings through a sweep command they must not change.

Plugins (README "Adding a strategy", "Adding a corpus"): ``AMBEMO_PLUGINS=module[,module]``
names modules that register strategies, corpus readers or backbone families (``ambemo.registry``);
``AMBEMO_CONFIG_PATH=DIR[:DIR]`` names folders with their ``conf/<group>/*.yaml`` and
``experiments/*.yaml``. Both reach DDP ranks and sweep agents through the environment.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback

from ambemo.config import GROUPS, ConfigError, compose, describe, experiment_names, group_options, parse_overrides
from ambemo.errors import AmbemoError
from ambemo.paper import provenance, recipe_names

USAGE = __doc__ or ""


def _train(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        cfg = compose(None, [a for a in parse_overrides([x for x in argv if x not in ("-h", "--help")])])
        print(USAGE)
        print(f"Experiments: {', '.join(experiment_names())}")
        print(f"Paper recipes (7B, GPU): {', '.join(recipe_names())}")
        for group in GROUPS:
            print(f"  {group}=<{'|'.join(group_options(group))}>")
        print("\nKeys (current values for this experiment):")
        print("\n".join(describe(cfg)))
        return 0
    print_only = "--print-config" in argv
    argv, seeds = _seeds_option([a for a in argv if a != "--print-config"])
    from_env = shlex.split(os.environ.get("AMBEMO_OVERRIDES", ""))
    if from_env:
        print(f"[ambemo] overrides from AMBEMO_OVERRIDES: {' '.join(from_env)}", file=sys.stderr)
        argv = [*from_env, *argv]
    overrides = parse_overrides(argv)
    from ambemo.resume import compose_resumed

    cfg = compose_resumed(overrides) or compose(None, overrides)
    if print_only:
        from ambemo.config import to_yaml

        print(to_yaml(cfg))
        print(provenance(cfg))  # each paper setting of this row: value, the paper's words, the source
        return 0
    from ambemo.train import RUN_DIR_ENV, train

    if seeds == 1:
        train(cfg)
        return 0
    if cfg.trainer.devices not in (1, "1") or cfg.trainer.num_nodes != 1:
        raise ConfigError(
            f"--seeds {seeds} trains the seeds one after another in this process, which does not combine with "
            f"several devices or nodes (trainer.devices={cfg.trainer.devices}): launch one job per seed with seed=S"
        )
    first = cfg.seed
    for seed in range(first, first + seeds):
        print(f"[ambemo] {cfg.experiment}: seed {seed} ({seed - first + 1} of {seeds})")
        os.environ.pop(RUN_DIR_ENV, None)  # each seed gets a run folder of its own
        train(compose(None, [*overrides, f"seed={seed}"]))
    os.environ.pop(RUN_DIR_ENV, None)
    return 0


def _seeds_option(argv: list[str]) -> tuple[list[str], int]:
    """``--seeds N`` (or ``--seeds=N``) taken out of the arguments: the number of seeds to run."""
    rest, seeds, i = [], 1, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--seeds" or arg.startswith("--seeds="):
            value = arg.partition("=")[2] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if "=" in arg else 2
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"--seeds needs a whole number >= 1 (runs seeds seed .. seed+N-1), got {value!r}")
            seeds = int(value)
            continue
        rest.append(arg)
        i += 1
    return rest, seeds


def _folds(argv: list[str]) -> int:
    from ambemo.folds import main as folds_main

    return folds_main(argv)


def _list(argv: list[str]) -> int:
    print("experiments: " + ", ".join(experiment_names()))
    print("paper recipes (7B, GPU): " + ", ".join(recipe_names()))
    for group in GROUPS:
        print(f"{group}: " + ", ".join(group_options(group)))
    return 0


def _data(argv: list[str]) -> int:
    if argv[:1] == ["summary"]:
        from ambemo.data.summary import main as summary_main

        return summary_main(argv[1:])
    from ambemo.data.synthetic import main as synthetic_main

    synthetic_main(argv or ["data/builtin"])
    return 0


def _score(argv: list[str]) -> int:
    from ambemo.score import main as score_main

    return score_main(argv)


def _curate(argv: list[str]) -> int:
    from ambemo.cot.curate import main as curate_main

    return curate_main(argv)


def _report(argv: list[str]) -> int:
    from ambemo.report import main as report_main

    return report_main(argv)


def _probe_reasoning(argv: list[str]) -> int:
    from ambemo.probe import main as probe_main

    return probe_main(argv)


def _bench(argv: list[str]) -> int:
    from ambemo.bench import main as bench_main

    return bench_main(argv)


def _sweep(argv: list[str]) -> int:
    from ambemo.sweep import main as sweep_main

    return sweep_main(argv)


def _predict(argv: list[str]) -> int:
    from ambemo.inference.predictor import main as predict_main

    return predict_main(argv)


def _export(argv: list[str]) -> int:
    from ambemo.inference.export import main as export_main

    return export_main(argv)


def _serve(argv: list[str]) -> int:
    from ambemo.serve.cli import serve_main

    return serve_main(argv)


def _demo(argv: list[str]) -> int:
    from ambemo.serve.cli import demo_main

    return demo_main(argv)


COMMANDS = {
    "train": _train,
    "folds": _folds,
    "score": _score,
    "data": _data,
    "list": _list,
    "curate": _curate,
    "report": _report,
    "bench": _bench,
    "probe-reasoning": _probe_reasoning,
    "sweep": _sweep,
    "predict": _predict,
    "export": _export,
    "serve": _serve,
    "demo": _demo,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[:1]
    if debug:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    try:
        return COMMANDS[argv[0]](argv[1:])
    except AmbemoError as err:
        if debug:
            traceback.print_exc()
        print(f"ambemo: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"ambemo: {argv[0]}: interrupted. Whatever was written before is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

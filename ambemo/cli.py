"""The ``ambemo`` command.

    ambemo train [experiment=NAME] [group=option ...] [key=value | --key=value ...]
    ambemo train experiment=sft_cot --print-config     # show the resolved config and exit
    ambemo train --help                                # every key with its type, default and doc
    ambemo score PRED.jsonl [GOLD.jsonl] [--out FILE]  # score any system's predictions
    ambemo data [OUT_DIR] [--seed N]                   # generate the built-in synthetic corpus
    ambemo curate CORPUS --store STORE.jsonl [--dry-run] [--max-cost USD] ...  # verified CoTs (--help)
    ambemo data summary data=NAME [key=value ...] [--out FILE.json]  # splits, priors, durations, skips
    ambemo report [RUN_DIR ...]                        # results table with bootstrap 95 % intervals
    ambemo sweep NAME|FILE.yaml [--trials N] [key=value ...]  # a W&B sweep file, run locally (optuna)
    ambemo predict MODEL AUDIO... [--out FILE.jsonl]   # MODEL: export folder, run folder or latest:NAME (--help)
    ambemo export RUN_DIR OUT_DIR                      # a model folder for applications (adapter, card, threshold)
    ambemo list                                        # experiments and building blocks
    ambemo bench [--size tiny|7b] [--group K] [--new-tokens N] [--json F]  # step and rollout speed (--help)

A problem with the input (a setting, a file, a run folder, a checkpoint, an output path) ends
with one line ``ambemo: <what>: <why>. <what to do>`` and exit status 2 (130 when interrupted);
a traceback means a bug. ``ambemo --debug COMMAND ...`` shows the traceback in every case.

``--key=value`` is accepted everywhere ``key=value`` is, because that is what a W&B sweep agent
passes to the training command. ``AMBEMO_OVERRIDES="key=value ..."`` in the environment adds
overrides to every ``ambemo train`` before its own arguments (which win): how ``ambemo sweep`` and
tests pass fixed settings through a sweep command they must not change.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback

from ambemo.config import GROUPS, compose, describe, experiment_names, group_options, parse_overrides
from ambemo.errors import AmbemoError

USAGE = __doc__ or ""


def _train(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        cfg = compose(None, [a for a in parse_overrides([x for x in argv if x not in ("-h", "--help")])])
        print(USAGE)
        print(f"Experiments: {', '.join(experiment_names())}")
        for group in GROUPS:
            print(f"  {group}=<{'|'.join(group_options(group))}>")
        print("\nKeys (current values for this experiment):")
        print("\n".join(describe(cfg)))
        return 0
    print_only = "--print-config" in argv
    from_env = shlex.split(os.environ.get("AMBEMO_OVERRIDES", ""))
    if from_env:
        print(f"[ambemo] overrides from AMBEMO_OVERRIDES: {' '.join(from_env)}", file=sys.stderr)
        argv = [*from_env, *argv]
    cfg = compose(None, parse_overrides([a for a in argv if a != "--print-config"]))
    if print_only:
        from ambemo.config import to_yaml

        print(to_yaml(cfg))
        return 0
    from ambemo.train import train

    train(cfg)
    return 0


def _list(argv: list[str]) -> int:
    print("experiments: " + ", ".join(experiment_names()))
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


COMMANDS = {
    "train": _train,
    "score": _score,
    "data": _data,
    "list": _list,
    "curate": _curate,
    "report": _report,
    "bench": _bench,
    "sweep": _sweep,
    "predict": _predict,
    "export": _export,
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

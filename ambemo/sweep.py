"""W&B sweep files, checked and expanded as a W&B agent does, and run locally with optuna.

    ambemo sweep NAME|FILE.yaml [--trials N] [--out runs/sweeps] [--seed 0] [key=value ...]

A sweep file (``experiments/sweeps/<name>.yaml``) is in W&B's sweep format, so ``wandb sweep
FILE`` + ``wandb agent ID`` run it against a W&B server (``make sweep NAME=...``). Without a
server, ``ambemo sweep`` (``make sweep-local NAME=...``) runs the same file here:

- each trial's parameters are sampled by optuna: ``grid`` -> GridSampler, ``random`` ->
  RandomSampler, ``bayes`` -> TPESampler (seeded);
- the trial's command is the file's ``command`` expanded exactly as ``wandb agent`` expands it
  (wandb's own macro functions: ``${env}``, ``${interpreter}``, ``${program}``, ``${args}``,
  ``${args_no_hyphens}``, ``${args_json}``, ``${args_json_file}``, ``${envvar:NAME}`` ...) and
  runs as a subprocess, with ``python`` resolving to this interpreter;
- the trial's run folder is ``<out>/<sweep>/trial-<k>`` (through ``AMBEMO_RUN_DIR``); its W&B
  run is offline there (``wandb sync`` later), grouped as ``sweep-<name>``;
- the trial's value is the sweep metric read from its run folder: ``test/<key>`` from
  ``summary.json``, any other name from ``metrics.csv`` as the best value logged (min for
  ``minimize``, max for ``maximize``; the W&B run's summary holds the same for ``val/js``);
- ``<out>/<sweep>/summary.md`` and ``summary.json`` list every trial and the best one;
- the optuna study is kept in ``<out>/<sweep>/optuna.journal``: the same command run again after
  a kill resumes the sweep (the interrupted trial afresh with its parameters, then the rest;
  finished trials are not repeated); another sweep file, ``--seed`` or override list there is
  refused.

Extra ``key=value`` arguments reach every trial through ``AMBEMO_OVERRIDES`` (see ``ambemo
train``), before the sampled parameters, which therefore win.

Parameter specs (W&B's names). Supported here: ``value``; ``values`` (categorical; the only
kind ``grid`` takes besides ``value``); ``min``/``max`` with ``distribution`` ``int_uniform``,
``uniform``, ``q_uniform`` (``q`` = step), ``log_uniform_values`` (bounds are values) and
``log_uniform`` (bounds are natural-log exponents); the distribution is inferred as W&B does
when left out (int bounds -> ``int_uniform``, float bounds -> ``uniform``). Valid in W&B but
refused here, naming the parameter: ``q_log_uniform_values``, ``normal`` and the other
unbounded or inverse distributions, nested ``parameters``, ``early_terminate``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ambemo.compat import logged_values, sweep_command
from ambemo.config import PACKAGE_ROOT, ConfigError, compose, parse_overrides
from ambemo.errors import AmbemoError
from ambemo.runs import SUMMARY, read_summary, unusable_reason

SWEEPS_DIR = PACKAGE_ROOT / "experiments" / "sweeps"
OVERRIDES_ENV = "AMBEMO_OVERRIDES"  # read by `ambemo train`; shlex-split key=value overrides
METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
TOP_LEVEL_KEYS = {
    "program",
    "command",
    "method",
    "metric",
    "parameters",
    "name",
    "description",
    "project",
    "entity",
    "early_terminate",
    "run_cap",
}
#: The distributions ``ambemo sweep`` runs; W&B's sweep schema knows the others as well.
LOCAL_DISTRIBUTIONS = {
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
}
WANDB_DISTRIBUTIONS = LOCAL_DISTRIBUTIONS | {
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
}
ARGS_MACROS = {
    "${args}",
    "${args_no_hyphens}",
    "${args_no_equals}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's, when a file has none


class SweepError(AmbemoError, ValueError):
    """A sweep file or run that cannot be used; the message names the file and what is wrong."""


@dataclass
class Sweep:
    """A checked sweep file."""

    name: str
    path: Path
    spec: dict[str, Any]
    distributions: dict[str, str] = field(default_factory=dict)
    """Parameter -> its (explicit or inferred) W&B distribution."""

    @property
    def metric(self) -> str:
        return self.spec["metric"]["name"]

    @property
    def goal(self) -> str:
        return self.spec["metric"].get("goal", "minimize")

    @property
    def command(self) -> list[str]:
        return [str(c) for c in self.spec.get("command") or DEFAULT_COMMAND]


def resolve_path(name_or_file: str | Path) -> Path:
    """``experiments/sweeps/<name>.yaml`` for a name, else the file as given."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return SWEEPS_DIR / f"{name_or_file}.yaml"


def sweep_names() -> list[str]:
    """Names of the built-in sweep files."""
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def infer_distribution(spec: dict[str, Any]) -> str:
    """The distribution W&B assumes for a parameter spec (explicit ``distribution`` wins)."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical"
    if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        return "int_uniform"
    return "uniform"


def _check_parameter(where: str, name: str, spec: Any) -> str:
    if not isinstance(spec, dict):
        raise SweepError(f"{where}: parameter {name!r} must be a mapping like {{values: [...]}} or {{min: ., max: .}}")
    if "parameters" in spec:
        raise SweepError(f"{where}: parameter {name!r}: nested parameters are not supported; use dotted names")
    dist = infer_distribution(spec)
    if dist not in WANDB_DISTRIBUTIONS:
        known = ", ".join(sorted(WANDB_DISTRIBUTIONS))
        raise SweepError(f"{where}: parameter {name!r}: unknown distribution {dist!r} (W&B's: {known})")
    if dist == "constant" and "value" not in spec:
        raise SweepError(f"{where}: parameter {name!r}: distribution constant needs 'value'")
    if dist == "categorical" and not (isinstance(spec.get("values"), list) and spec["values"]):
        raise SweepError(f"{where}: parameter {name!r}: 'values' must be a non-empty list")
    if dist not in ("constant", "categorical") and not dist.endswith(("normal", "beta")):  # those take mu/sigma, a/b
        low, high = spec.get("min"), spec.get("max")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise SweepError(f"{where}: parameter {name!r}: {dist} needs numeric 'min' and 'max'")
        if low >= high:
            raise SweepError(f"{where}: parameter {name!r}: 'min' ({low}) must be below 'max' ({high})")
        if dist.endswith("_values") and low <= 0:
            raise SweepError(f"{where}: parameter {name!r}: {dist} needs min > 0 (they are values, not exponents)")
        if dist.startswith("q_") and not (isinstance(spec.get("q", 1), (int, float)) and spec.get("q", 1) > 0):
            raise SweepError(f"{where}: parameter {name!r}: 'q' must be a positive number")
    return dist


def load_sweep(name_or_file: str | Path) -> Sweep:
    """Read and check a sweep file: known keys and method, a metric with a goal, valid parameter
    specs, a command that passes the parameters (an ``${args...}`` macro), and a program where
    the command names ``${program}``. Raises ``SweepError`` naming the file."""
    path = resolve_path(name_or_file)
    if not path.is_file():
        raise SweepError(f"no sweep file {path} (built-in sweeps: {', '.join(sweep_names())})")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(spec) - TOP_LEVEL_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; W&B sweep keys are {', '.join(sorted(TOP_LEVEL_KEYS))}")
    if spec.get("method") not in METHODS:
        raise SweepError(f"{path}: 'method' must be one of {', '.join(METHODS)}, got {spec.get('method')!r}")
    metric = spec.get("metric")
    if not (isinstance(metric, dict) and isinstance(metric.get("name"), str)):
        raise SweepError(f"{path}: 'metric' must be a mapping with a 'name' (e.g. val/js) and a 'goal'")
    if metric.get("goal", "minimize") not in GOALS:
        raise SweepError(f"{path}: metric goal must be minimize or maximize, got {metric.get('goal')!r}")
    parameters = spec.get("parameters")
    if not (isinstance(parameters, dict) and parameters):
        raise SweepError(f"{path}: 'parameters' must map parameter names to specs")
    command = spec.get("command") or DEFAULT_COMMAND
    if not (isinstance(command, list) and all(isinstance(c, (str, int, float)) for c in command)):
        raise SweepError(f"{path}: 'command' must be a list of strings")
    if not ARGS_MACROS & {str(c) for c in command}:
        raise SweepError(f"{path}: 'command' passes no parameters: add one of {', '.join(sorted(ARGS_MACROS))}")
    if "${program}" in command and not spec.get("program"):
        raise SweepError(f"{path}: the command uses ${{program}} but there is no 'program'")
    sweep = Sweep(name=path.stem, path=path, spec=spec)
    sweep.distributions = {name: _check_parameter(str(path), name, p) for name, p in parameters.items()}
    return sweep


def train_overrides(sweep: Sweep) -> list[str] | None:
    """The fixed ``key=value`` arguments of a command that runs ``ambemo ... train``, else None."""
    command = sweep.command
    if "train" not in command or not any("ambemo" in c for c in command[: command.index("train")]):
        return None
    return [c for c in command[command.index("train") + 1 :] if not c.startswith("${")]


def check_parameters_compose(sweep: Sweep) -> None:
    """For an ``ambemo train`` command: every parameter is a config key and its extreme/listed
    values type-check, so a typo fails here rather than in every trial."""
    fixed = train_overrides(sweep)
    if fixed is None:
        return
    for name, spec in sweep.spec["parameters"].items():
        probes = [spec["min"], spec["max"]] if "min" in spec else (spec.get("values") or [spec.get("value")])
        if sweep.distributions[name] == "log_uniform":
            probes = [math.exp(v) for v in probes]
        for value in probes:
            try:
                compose(None, parse_overrides([*fixed, f"--{name}={value}"]))
            except ConfigError as err:
                raise SweepError(f"{sweep.path}: parameter {name!r} = {value!r}: {err}") from None


# --------------------------------------------------------------------------------------------
# Expansion, exactly as `wandb agent` does it (wandb/wandb_agent.py, Agent._command_run)


def expand_command(sweep: Sweep, params: dict[str, Any], args_json_file: Path | None = None) -> list[str]:
    """The argv ``wandb agent`` would run for these parameter values.

    Uses wandb's own code (``ambemo.compat.sweep_command``: ``${envvar:NAME}`` and the
    ``${args...}`` forms), then substitutes whole-element macros as the agent does:
    ``${interpreter}`` -> ``python``, ``${env}`` -> ``/usr/bin/env``, ``${program}``, and
    ``${args_json_file}`` (written here if the command uses it).
    """
    command, sweep_vars = sweep_command(sweep.command, params)
    sweep_vars["interpreter"] = ["python"]
    sweep_vars["program"] = [sweep.spec.get("program")]
    if sys.platform != "win32":
        sweep_vars["env"] = ["/usr/bin/env"]
    if "${args_json_file}" in command:
        if args_json_file is None:
            raise SweepError(f"{sweep.path}: the command uses ${{args_json_file}}: give a file to write")
        args_json_file.write_text(sweep_vars["args_json"][0])
        sweep_vars["args_json_file"] = [str(args_json_file)]
    out: list[str] = []
    for c in command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            out += [str(v) for v in sweep_vars.get(c[2:-1]) or []]
        else:
            out.append(c)
    return out


# --------------------------------------------------------------------------------------------
# Local execution with optuna


def optuna_distributions(sweep: Sweep) -> dict[str, Any]:
    """optuna distributions per parameter (``log_uniform`` is sampled in exponent space)."""
    import optuna.distributions as D

    out: dict[str, Any] = {}
    for name, spec in sweep.spec["parameters"].items():
        dist = sweep.distributions[name]
        if dist not in LOCAL_DISTRIBUTIONS:
            raise SweepError(
                f"{sweep.path}: parameter {name!r}: distribution {dist!r} is valid in W&B but not supported by "
                f"`ambemo sweep` (supported: {', '.join(sorted(LOCAL_DISTRIBUTIONS))})"
            )
        if sweep.spec["method"] == "grid" and dist not in ("constant", "categorical"):
            raise SweepError(f"{sweep.path}: parameter {name!r}: a grid sweep needs 'values' (or 'value'), not {dist}")
        if dist in ("constant", "categorical"):
            choices = spec["values"] if dist == "categorical" else [spec["value"]]
            bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise SweepError(f"{sweep.path}: parameter {name!r}: values must be numbers, strings or bools: {bad}")
            out[name] = D.CategoricalDistribution(choices)
        elif dist == "int_uniform":
            out[name] = D.IntDistribution(int(spec["min"]), int(spec["max"]))
        elif dist == "uniform":
            out[name] = D.FloatDistribution(float(spec["min"]), float(spec["max"]))
        elif dist == "q_uniform":
            out[name] = D.FloatDistribution(float(spec["min"]), float(spec["max"]), step=float(spec.get("q", 1.0)))
        elif dist == "log_uniform_values":
            out[name] = D.FloatDistribution(float(spec["min"]), float(spec["max"]), log=True)
        else:  # log_uniform: min/max are exponents; uniform there = log-uniform in the value
            out[name] = D.FloatDistribution(float(spec["min"]), float(spec["max"]))
    return out


def sampler_for(sweep: Sweep, seed: int) -> Any:
    import optuna

    if sweep.spec["method"] == "grid":
        space = {k: list(v.choices) for k, v in optuna_distributions(sweep).items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    if sweep.spec["method"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def grid_size(sweep: Sweep) -> int:
    return math.prod(len(spec.get("values", [0])) for spec in sweep.spec["parameters"].values())


def trial_value(run_dir: Path, metric: str, goal: str) -> float:
    """The sweep metric of a finished run folder (see the module docstring). A trial whose run is
    not finished (a fast-dev, failed or interrupted run) has no value: ``SweepError`` says why."""
    reason = unusable_reason(run_dir, weights=False)
    if reason is not None:
        raise SweepError(f"{run_dir}: not counted: {reason}")
    if metric.startswith("test/"):
        test = read_summary(run_dir).get("test", {})
        key = metric.partition("/")[2]
        if key not in test:
            raise SweepError(f"{run_dir / SUMMARY}: no test metric {key!r} (has {', '.join(sorted(test))})")
        return float(test[key])
    metrics_path = run_dir / "metrics.csv"
    if not metrics_path.is_file():
        raise SweepError(f"{run_dir}: no metrics.csv to read {metric!r} from")
    values = logged_values(metrics_path, metric)
    if not values:
        raise SweepError(f"{metrics_path}: {metric!r} was never logged (is validation enabled?)")
    return min(values) if goal == "minimize" else max(values)


def _trial_env(sweep: Sweep, run_dir: Path, extra: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    # `python` in the command is this interpreter, as it is for an agent started from this venv
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["AMBEMO_RUN_DIR"] = str(run_dir)
    env.setdefault("WANDB_MODE", "offline")
    env["WANDB_RUN_GROUP"] = f"sweep-{sweep.name}"
    if extra:
        env[OVERRIDES_ENV] = " ".join([env.get(OVERRIDES_ENV, ""), *map(shlex.quote, extra)]).strip()
    return env


STUDY_FILE = "optuna.journal"
"""The sweep's optuna study, in its folder: an append-only journal, so a killed sweep resumes."""


def _settings(sweep: Sweep, seed: int, extra: list[str]) -> dict[str, Any]:
    """What makes two runs of ``ambemo sweep`` the same sweep (a resume continues only that)."""
    return {"spec": json.loads(json.dumps(sweep.spec)), "seed": seed, "overrides": list(extra)}


def open_study(sweep: Sweep, folder: Path, seed: int, extra: list[str]) -> Any:
    """The sweep's study, stored in ``folder/optuna.journal``: created, or loaded to resume.

    Resuming checks that the sweep file, seed and overrides are the ones the study started with
    (else ``SweepError``), marks a trial left running by a killed sweep as failed and queues it
    again with the same parameters (and grid point), so finished trials are never repeated.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    journal = folder / STUDY_FILE
    if not journal.is_file() and any(folder.glob("trial-*")):
        # trial run folders are reused by name: a second sweep would mix its checkpoints and metrics in
        raise SweepError(f"{folder} holds trials of an earlier sweep: move or delete it, or give --out OTHER_DIR")
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=sweep.name,
        storage=JournalStorage(JournalFileBackend(str(journal))),
        direction=sweep.goal,
        sampler=sampler_for(sweep, seed),
        load_if_exists=True,
    )
    settings = _settings(sweep, seed, extra)
    if "settings" not in study.user_attrs:
        study.set_user_attr("settings", settings)
        return study
    started = study.user_attrs["settings"]
    changed = [key for key in settings if started.get(key) != settings[key]]
    if changed:
        was = "; ".join(f"{key} was {started.get(key)!r}" for key in changed if key != "spec")
        raise SweepError(
            f"{folder} holds a sweep started with another {' and '.join(changed)}"
            f"{f' ({was})' if was else ' (the sweep file changed)'}: rerun it with the same file, --seed and "
            "overrides to resume it, or give --out OTHER_DIR"
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)  # one process runs a sweep: this one was killed
    finished = {t.user_attrs["slot"] for t in study.trials if "seconds" in t.user_attrs}
    interrupted = [t for t in study.get_trials(states=(TrialState.FAIL,)) if "seconds" not in t.user_attrs]
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if interrupted and not waiting and interrupted[-1].user_attrs.get("slot") not in finished:
        last = interrupted[-1]  # queued again as it was: parameters, user and system (grid point) attributes
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=last.params,
                distributions=last.distributions,
                user_attrs=last.user_attrs,
                system_attrs=last.system_attrs,
            )
        )
    if sweep.spec["method"] != "grid":
        # a sampler seeded as at the start would draw the first trials' parameters again (the grid
        # sampler's seed sets its grid order instead, which must stay)
        study.sampler = sampler_for(sweep, seed + len(study.trials))
    return study


def trial_records(study: Any) -> list[dict[str, Any]]:
    """The finished trials of a sweep's study (complete or failed; not interrupted), in order."""
    records = []
    for t in sorted((t for t in study.trials if "seconds" in t.user_attrs), key=lambda t: t.user_attrs["slot"]):
        attrs = t.user_attrs
        record = {"trial": attrs["slot"], "params": attrs["params"], "run_dir": attrs["run_dir"]}
        record |= {"command": attrs["command"], "seconds": attrs["seconds"]}
        if t.state.name == "COMPLETE":
            record.update(state="complete", value=t.value)
        else:
            record.update(state="failed", error=attrs.get("error", "interrupted"))
        records.append(record)
    return records


def run_local(
    sweep: Sweep, trials: int | None, out_dir: Path, seed: int = 0, extra: list[str] | None = None
) -> dict[str, Any]:
    """Run ``trials`` trials (default: the whole grid; required otherwise) and write the summary.

    The study lives in ``<out>/<sweep>/optuna.journal``: the same command run again after a kill
    goes on where the sweep stopped (the interrupted trial afresh, then the rest)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported below, with its log file
    distributions = optuna_distributions(sweep)
    if trials is None:
        if sweep.spec["method"] != "grid":
            raise SweepError(f"{sweep.path}: a {sweep.spec['method']} sweep needs --trials N")
        trials = grid_size(sweep)
    folder = out_dir / sweep.name
    study = open_study(sweep, folder, seed, extra or [])
    done = len(trial_records(study))
    if done:
        print(f"[ambemo sweep] {sweep.name}: resuming; {done} trial(s) of {trials} already finished", flush=True)
    slots = iter(range(done, trials))  # a queued interrupted trial comes first: it takes the next index

    def objective(trial: optuna.Trial) -> float:
        k = next(slots)
        sampled = {name: suggest(trial, name, dist) for name, dist in distributions.items()}
        params = {n: math.exp(v) if sweep.distributions[n] == "log_uniform" else v for n, v in sampled.items()}
        run_dir = folder / f"trial-{k}"
        if run_dir.exists():  # what the interrupted run of this trial left: start it clean
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        command = expand_command(sweep, params, run_dir / "args.json")
        for key, value in {"slot": k, "params": params, "run_dir": str(run_dir), "command": command}.items():
            trial.set_user_attr(key, value)
        print(f"[ambemo sweep] {sweep.name} trial {k + 1}/{trials}: {shlex.join(command)}", flush=True)
        started = time.time()
        with open(run_dir / "sweep-output.log", "w") as log:
            code = subprocess.call(command, env=_trial_env(sweep, run_dir, extra or []), stdout=log, stderr=log)
        trial.set_user_attr("seconds", round(time.time() - started, 1))  # marks the trial finished, not killed
        try:
            if code != 0:
                raise SweepError(f"exit code {code}; see {run_dir / 'sweep-output.log'}")
            value = trial_value(run_dir, sweep.metric, sweep.goal)
        except SweepError as err:
            trial.set_user_attr("error", str(err))
            print(f"[ambemo sweep] trial {k} failed: {err}", file=sys.stderr)
            raise
        print(f"[ambemo sweep] trial {k}: {sweep.metric} = {value:.4f}")
        return value

    if done < trials:
        # optimize, not ask/tell: the grid sampler stops the study after the last grid point, which
        # optuna allows only inside optimize
        study.optimize(
            objective,
            n_trials=trials - done,
            catch=(SweepError,),
            callbacks=[lambda study, _: write_summary(sweep, folder, trial_records(study))],  # current after a kill
        )
    return write_summary(sweep, folder, trial_records(study))


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial``'s value for a parameter with one of ``optuna_distributions``' distributions."""
    import optuna.distributions as D

    if isinstance(dist, D.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def write_summary(sweep: Sweep, folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """``summary.json`` and ``summary.md`` in the sweep folder; returns the summary."""
    done = [r for r in records if r["state"] == "complete"]
    pick = min if sweep.goal == "minimize" else max
    best = pick(done, key=lambda r: r["value"]) if done else None
    summary = {
        "sweep": sweep.name,
        "file": str(sweep.path),
        "method": sweep.spec["method"],
        "metric": sweep.metric,
        "goal": sweep.goal,
        "trials": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "best": best,
        "all": records,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    names = list(sweep.spec["parameters"])
    lines = [
        f"# Sweep {sweep.name} ({sweep.spec['method']}, {sweep.goal} {sweep.metric})",
        "",
        f"{len(done)} of {len(records)} trials completed. Source: `{sweep.path}`.",
        "",
    ]
    if best is not None:
        lines += [f"Best: trial {best['trial']}, {sweep.metric} = {best['value']:.4f}, run `{best['run_dir']}`", ""]
        lines += [f"    {shlex.join(best['command'])}", ""]
    lines.append("| trial | " + " | ".join(names) + f" | {sweep.metric} | state | seconds |")
    lines.append("|---" * (len(names) + 4) + "|")
    for r in records:
        value = f"{r['value']:.4f}" if "value" in r else "-"
        cells = " | ".join(_fmt(r["params"][n]) for n in names)
        lines.append(f"| {r['trial']} | {cells} | {value} | {r['state']} | {r['seconds']} |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ambemo sweep``; 0, or 2 with a message for a bad sweep file."""
    parser = argparse.ArgumentParser(
        prog="ambemo sweep",
        description="Run a W&B sweep file locally with optuna (no W&B server needed).",
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep", help=f"a sweep name ({', '.join(sweep_names())}) or a sweep YAML file")
    parser.add_argument("--trials", type=int, default=None, help="number of trials (default: the whole grid)")
    parser.add_argument("--out", type=Path, default=Path("runs/sweeps"), help="sweep folders go here")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every trial")
    args, unknown = parser.parse_known_args(argv)  # --key=value overrides too
    try:
        sweep = load_sweep(args.sweep)
        check_parameters_compose(sweep)
        summary = run_local(sweep, args.trials, args.out, args.seed, parse_overrides([*args.overrides, *unknown]))
    except (SweepError, ConfigError) as err:
        print(f"ambemo sweep: {err}", file=sys.stderr)
        return 2
    print((args.out / sweep.name / "summary.md").read_text())
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())

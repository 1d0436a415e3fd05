"""Sweep files: valid W&B sweeps whose agent-expanded commands train; a local optuna sweep completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from ambemo import cli
from ambemo.sweep import (
    SweepError,
    check_parameters_compose,
    expand_command,
    load_sweep,
    optuna_distributions,
    sampler_for,
    sweep_names,
    trial_value,
)
from ambemo.sweep import main as sweep_main

REPO = Path(__file__).resolve().parent.parent


def test_builtin_sweeps_cover_the_knobs_that_matter() -> None:
    swept = {name for sweep in sweep_names() for name in load_sweep(sweep).spec["parameters"]}
    assert {"strategy.kl_weight", "strategy.beta", "strategy.lr", "strategy.group_size", "model.lora_r"} <= swept
    assert {load_sweep(s).spec["method"] for s in sweep_names()} == {"grid", "random", "bayes"}


@pytest.mark.parametrize("name", sweep_names())
def test_sweep_file_is_valid(name: str) -> None:
    sweep = load_sweep(name)
    assert sweep.metric == "val/js" and sweep.goal == "minimize"
    check_parameters_compose(sweep)  # every parameter is a config key and its values type-check
    optuna_distributions(sweep)  # and `ambemo sweep` can sample it


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


HEAD = "method: random\nmetric: {name: val/js, goal: minimize}\ncommand: [python, -m, ambemo.cli, train, '${args}']\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: anneal\nmetric: {name: val/js}\nparameters: {a: {values: [1]}}\n", "'method' must be one of"),
        (HEAD + "parameters: {strategy.lr: {min: 1, max: 0}}\n", "must be below"),
        (HEAD + "parameters: {strategy.lr: {distribution: gaussian, min: 0, max: 1}}\n", "unknown distribution"),
        (HEAD + "parameters: {strategy.lr: {values: []}}\n", "non-empty list"),
        (HEAD + "parameters: {strategy.lr: {values: [1]}}\nearly_stop: 3\n", "unknown key"),
        (HEAD.replace("${args}", "x=1") + "parameters: {strategy.lr: {values: [1]}}\n", "passes no parameters"),
        ("method: grid\nmetric: {name: val/js}\nparameters: {a: {values: [1]}}\n", "no 'program'"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        load_sweep(_write(tmp_path, text))


def test_unknown_key_and_unsupported_distribution_are_clear(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, HEAD + "parameters: {strategy.lrr: {values: [0.1]}}\n"))
    with pytest.raises(SweepError, match=r"strategy.lrr.*unknown key"):
        check_parameters_compose(sweep)
    spec = "parameters: {strategy.lr: {distribution: q_log_uniform_values, min: 0.001, max: 0.1, q: 0.001}}\n"
    with pytest.raises(SweepError, match="valid in W&B but not supported"):
        optuna_distributions(load_sweep(_write(tmp_path, HEAD + spec)))


def test_expansion_matches_the_wandb_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEP_TAG", "t1")
    text = (
        "method: grid\nmetric: {name: val/js}\nprogram: train.py\n"
        "command: ['${env}', '${interpreter}', '${program}', 'tag=${envvar:SWEEP_TAG}', '${args_no_hyphens}',"
        " '${args_json_file}']\n"
        "parameters: {strategy.lr: {values: [0.1]}, model.lora_r: {value: 4}}\n"
    )
    sweep = load_sweep(_write(tmp_path, text))
    command = expand_command(sweep, {"strategy.lr": 0.1, "model.lora_r": 4}, tmp_path / "args.json")
    assert command == [
        "/usr/bin/env",
        "python",
        "train.py",
        "tag=t1",
        "strategy.lr=0.1",
        "model.lora_r=4",
        str(tmp_path / "args.json"),
    ]
    assert json.loads((tmp_path / "args.json").read_text()) == {"strategy.lr": 0.1, "model.lora_r": 4}


@pytest.mark.parametrize("name", sweep_names())
def test_agent_command_runs_a_fast_dev_run(
    name: str, fast_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = load_sweep(name)
    trial = optuna.create_study(sampler=sampler_for(sweep, seed=1)).ask(optuna_distributions(sweep))
    command = expand_command(sweep, trial.params)
    assert command[:4] == ["/usr/bin/env", "python", "-m", "ambemo.cli"]
    assert [f"--{k}={v}" for k, v in trial.params.items()] == command[-len(trial.params) :]
    # What the agent's subprocess would run, in-process (the subprocess path is tested by the
    # local sweep below); the fast settings come through AMBEMO_OVERRIDES, the swept ones win.
    fast = [
        *fast_overrides,
        "trainer.fast_dev_run=true",
        "model.init_from=null",
        "data.batch_size=2",
        "data.eval_batch_size=4",
        "strategy.max_new_tokens=8",
        # the rollouts' budget is a setting of the on-policy strategies only
        *(["strategy.rollout_max_new_tokens=8"] if name != "sft_cot" else []),
    ]
    monkeypatch.setenv("AMBEMO_OVERRIDES", " ".join(fast))
    monkeypatch.setenv("AMBEMO_RUN_DIR", str(tmp_path / "trial"))
    assert cli.main(command[4:]) == 0
    config = OmegaConf.load(tmp_path / "trial" / "config.yaml")
    assert {key: OmegaConf.select(config, key) for key in trial.params} == pytest.approx(trial.params)
    assert json.loads((tmp_path / "trial" / "summary.json").read_text())["test"]["n"] > 0


def test_local_sweep_two_trials(fast_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `python` in the trial command must import this checkout's ambemo
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(tmp_path)
    fast = [
        *fast_overrides,
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "data.limit_train=8",
        "data.limit_eval=8",
        "strategy.own_readout_weight=0",
        "strategy.max_new_tokens=16",
        "trainer.torch_threads=1",
    ]
    assert sweep_main(["sft_cot", "--trials", "2", "--out", str(tmp_path / "sweeps"), *fast]) == 0
    folder = tmp_path / "sweeps" / "sft_cot"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["completed"] == 2 and summary["failed"] == 0
    values = [t["value"] for t in summary["all"]]
    assert summary["best"]["value"] == min(values)
    for t in summary["all"]:
        run = Path(t["run_dir"])
        assert t["value"] == trial_value(run, "val/js", "minimize")
        assert list((run / "wandb").glob("offline-run-*"))  # logged offline, to `wandb sync` later
        assert f"--strategy.kl_weight={t['params']['strategy.kl_weight']}" in t["command"]
    assert "Best: trial" in (folder / "summary.md").read_text()
    assert sweep_main(["sft_cot", "--trials", "1", "--out", str(tmp_path / "sweeps")]) == 2  # never mixes sweeps


def test_random_sweep_needs_a_trial_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert sweep_main(["sft_cot"]) == 2
    assert "needs --trials" in capsys.readouterr().err


# A trial program that stands in for `ambemo train` (seconds, not minutes): it writes the metric
# into its run folder, logs each call, and kills the sweep process on its first run of trial-1.
FAKE_TRAIN = """
import json, os, signal, sys
from pathlib import Path
run = Path(os.environ["AMBEMO_RUN_DIR"])
x = json.loads(Path(sys.argv[1]).read_text())["x"]
with open(run.parent / "calls.log", "a") as log:
    log.write(f"{run.name} {x}\\n")
marker = run.parent / "kill-in-trial-1"
if run.name == "trial-1" and marker.exists():
    marker.unlink()
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(1)
(run / "predictions.jsonl").write_text("{}\\n")  # a finished run folder has its predictions
(run / "summary.json").write_text(json.dumps({"status": "finished", "test": {"js": x}}))
"""


@pytest.mark.parametrize("method", ["random", "grid"])
def test_killed_sweep_resumes_without_repeating_trials(tmp_path: Path, method: str) -> None:
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    x = "{min: 0.0, max: 1.0}" if method == "random" else "{values: [0.1, 0.2, 0.3]}"
    sweep_file = tmp_path / "toy.yaml"
    sweep_file.write_text(
        f"method: {method}\nmetric: {{name: test/js, goal: minimize}}\nprogram: {tmp_path / 'fake_train.py'}\n"
        f"command: ['${{interpreter}}', '${{program}}', '${{args_json_file}}']\nparameters: {{x: {x}}}\n"
    )
    out = tmp_path / "sweeps"
    (out / "toy").mkdir(parents=True)
    (out / "toy" / "kill-in-trial-1").touch()
    args = [str(sweep_file), "--trials", "3", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-m", "ambemo.sweep", *args], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL  # killed during its second trial, as a user's kill -9 would
    assert sweep_main(args) == 0
    calls = [line.split() for line in (out / "toy" / "calls.log").read_text().splitlines()]
    assert [name for name, _ in calls] == ["trial-0", "trial-1", "trial-1", "trial-2"]  # trial 0 not repeated
    assert calls[1][1] == calls[2][1]  # the interrupted trial ran again with its parameters
    assert len({value for _, value in calls}) == 3  # and the resumed sampler drew a new point
    summary = json.loads((out / "toy" / "summary.json").read_text())
    assert (summary["trials"], summary["completed"]) == (3, 3)
    assert [t["trial"] for t in summary["all"]] == [0, 1, 2]
    assert [t["value"] for t in summary["all"]] == [float(value) for _, value in calls[:1] + calls[2:]]
    assert sweep_main(args) == 0  # a finished sweep: nothing runs again
    assert len((out / "toy" / "calls.log").read_text().splitlines()) == 4
    assert sweep_main([*args, "--seed", "1"]) == 2  # another seed is another sweep: refused, not mixed

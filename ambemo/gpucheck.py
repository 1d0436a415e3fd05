"""The device check: everything that only a GPU can show, in one command of under 8 minutes.

    make wheelhouse                 # here (network): wheels the GPU image lacks + a small corpus
    make gpu-check                  # on the GPU image: install them beside its packages, then this
    python -m ambemo.gpucheck --out DIR [--device cuda|cpu] [--tiny] [--only a,b] [--time-scale X]

Checks, each in its own process with a time limit, all output under ``--out``:

- ``bench``: ``ambemo bench --size 7b`` (SFT tokens/s and MFU; DPO and GRPO_z step time and peak
  memory; K=8 rollouts of 128 new tokens, fast engine against plain ``generate`` through the
  unmerged LoRA) -> ``bench.json``;
- ``equivalence``: the fast rollout engine against ``generate``, token for token, greedy, with
  non-zero LoRA after training steps, in bf16 with the compiled (CUDA-graph) decode (and, if
  that differs, in float32, to tell rounding from a bug), twice (the second call replays the
  captured graph), and every weight bit-identical afterwards -> ``equivalence.json``;
- ``sft_cot``, ``dpo_cot``, ``grpoz_cot``: a fast dev run of each on the tiny model
  (``logger=csv``, bf16 on the GPU) -> ``runs/``;
- ``ddp``: a 2-process DDP fast dev run of ``dpo_cot`` when the machine has more than one GPU.

One summary table is printed and written (``summary.txt``, ``summary.json``), with the targets
(SFT MFU >= 45 %; fast rollouts >= 1,300 tokens/s at K=8 and >= 10x plain ``generate``).

``--device cpu --tiny`` runs every piece at tiny scale on the CPU with wandb, optuna, openai and
espeakng-loader made unimportable in the child processes (as on the GPU image): the test suite
runs it, so the check cannot fail on the day for a reason a CPU could have shown.
``python -m ambemo.gpucheck wheelhouse DIR`` checks a downloaded wheelhouse (one wheel per line
of ``requirements/wheelhouse.txt``, at most 60 MiB); ``corpus DIR`` writes the small corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
#: Absent from the GPU image and not needed by a training run with ``logger=csv``.
OPTIONAL_MODULES = ("wandb", "optuna", "openai", "espeakng_loader")
#: The small synthetic corpus that travels with the wheelhouse (the image cannot speak it).
CORPUS_SIZES = {"n_train": 16, "n_val": 4, "n_test": 4}
WHEELHOUSE_LIMIT_MIB = 60
#: Seconds for all checks together: 8 minutes less the wheel installation and some slack.
BUDGET = 450.0
CPU_SLOWDOWN = 4
"""The CPU dry run's time limits and budget are this many times the GPU's."""
TARGETS = {"sft_mfu": 0.45, "fast_tokens_per_second": 1300.0, "fast_speedup": 10.0}
FAST_DEV_RUNS = ("sft_cot", "dpo_cot", "grpoz_cot")


# ---- the wheelhouse: what training needs minus what the GPU image has ---------------------------


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML`` = ``pyyaml``, ``a_b`` = ``a-b``)."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> dict[str, str | None]:
    """``{normalised name: pinned version or None}`` of a requirements file (``name[==version]`` lines)."""
    from packaging.requirements import Requirement

    out: dict[str, str | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        pins = [s.version for s in req.specifier if s.operator == "=="]
        out[normalise(req.name)] = pins[0] if pins else None
    return out


def training_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The project's required dependencies (what a training run imports), as written in pyproject."""
    import tomllib

    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def closure(requirements: Iterable[str], python: str = "3.12") -> dict[str, str]:
    """Every distribution ``requirements`` need on Linux x86-64 with Python ``python``, from the
    installed metadata of this environment: ``{normalised name: installed version}``. Extras
    asked for (``fsspec[http]``) are followed; a distribution not installed here is an error."""
    from importlib import metadata

    from packaging.requirements import Requirement

    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    found: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        name = normalise(req.name)
        for wanted in ["", *sorted(req.extras)]:
            if (name, wanted) in done:
                continue
            done.add((name, wanted))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError as err:
                raise RuntimeError(
                    f"{req.name} is needed but not installed here: cannot follow its dependencies"
                ) from err
            found[name] = dist.version
            todo.extend((Requirement(r), wanted) for r in dist.requires or [])
    return found


def wheelhouse_plan(image: Path = REQUIREMENTS / "gpu-image.txt") -> dict[str, str]:
    """What the wheelhouse must hold: the closure of the training requirements minus the closure
    of the GPU image's packages, ``{name: version}`` (this environment's versions)."""
    has = closure(read_requirements(image))
    return {name: version for name, version in closure(training_requirements()).items() if name not in has}


def check_wheelhouse(folder: Path, listed: Path = REQUIREMENTS / "wheelhouse.txt") -> list[str]:
    """Problems with a downloaded wheelhouse: each listed requirement has one wheel of its version,
    nothing else is there, and the wheels total at most ``WHEELHOUSE_LIMIT_MIB``."""
    wheels = sorted(folder.glob("*.whl"))
    expected = read_requirements(listed)
    problems, seen = [], set()
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        key = normalise(name)
        seen.add(key)
        if key not in expected:
            problems.append(f"{wheel.name}: not in {listed.name}")
        elif expected[key] != version:
            problems.append(f"{wheel.name}: {listed.name} pins {expected[key]}")
    problems += [f"{name}: no wheel in {folder}" for name in expected if name not in seen]
    size = sum(w.stat().st_size for w in wheels) / 2**20
    if size > WHEELHOUSE_LIMIT_MIB:
        problems.append(f"{folder}: {size:.1f} MiB of wheels, over {WHEELHOUSE_LIMIT_MIB} MiB")
    return problems


# ---- the checks -------------------------------------------------------------------------------


@dataclass
class Check:
    """One piece of the device check: a command run in its own process."""

    name: str
    argv: list[str]
    timeout: float
    phase: int
    """Checks of one phase run side by side (the tiny ones share the GPU); phases one after another."""
    skipped: str = ""
    """Why it does not run here (empty: it runs)."""


def corpus_sizes(corpus: Path) -> dict[str, int]:
    """The split sizes a synthetic corpus was generated with (runs must name them to reuse it)."""
    params = json.loads((corpus / "corpus.json").read_text())["params"]
    return {key: int(params[key]) for key in CORPUS_SIZES}


def train_overrides(experiment: str, args: argparse.Namespace, out: Path) -> list[str]:
    """A fast dev run of ``experiment`` on the tiny model and the small corpus."""
    trainer = "trainer=gpu" if args.device == "cuda" else "trainer=cpu"
    sizes = corpus_sizes(Path(args.corpus)) if (Path(args.corpus) / "corpus.json").is_file() else CORPUS_SIZES
    return [
        f"experiment={experiment}",
        "model=tiny",
        trainer,
        "logger=csv",
        "trainer.fast_dev_run=true",
        "model.init_from=null",
        f"data.root={args.corpus}",
        *(f"data.{k}={v}" for k, v in sizes.items()),
        "data.batch_size=2",
        "data.eval_batch_size=2",
        "strategy.max_new_tokens=16",
        # the rollouts' budget is a setting of the on-policy strategies (dpo_cot, grpoz_cot) only
        *(["strategy.rollout_max_new_tokens=16"] if experiment.startswith(("dpo", "grpo")) else []),
        f"out_dir={out / 'runs'}",
    ]


def bench_arguments(args: argparse.Namespace, out: Path) -> list[str]:
    """``ambemo bench`` at 7B on the GPU, or at tiny scale (``--tiny``)."""
    common = ["--device", args.device, "--only", "sft,dpo,grpoz,rollouts", "--json", str(out / "bench.json")]
    if args.tiny:
        return [*common, "--group", "2", "--new-tokens", "4", "--steps", "1", "--warmup", "0", "--batch", "1",
                "--cot-words", "24"]  # fmt: skip
    return [*common, "--size", "7b", "--group", "8", "--new-tokens", "128"]


def plan(args: argparse.Namespace, gpus: int) -> list[Check]:
    """The checks with their time limits (seconds), in phases: the bench alone (its timings), then
    the SFT run (it builds the corpus's audio cache) beside the equivalence check, then DPO and
    GRPO_z side by side, then DDP."""
    python, out = [sys.executable], Path(args.out)
    cli = [*python, "-m", "ambemo.cli"]
    equivalence = ["-m", "ambemo.gpucheck", "equivalence", "--device", args.device]
    checks = [
        Check("bench", [*cli, "bench", *bench_arguments(args, out)], 240, phase=0),
        Check("equivalence", [*python, *equivalence, "--json", str(out / "equivalence.json")], 120, phase=1),
        *(
            Check(name, [*cli, "train", *train_overrides(name, args, out)], 60, phase=1 if name == "sft_cot" else 2)
            for name in FAST_DEV_RUNS
        ),
    ]
    ddp_args = [*train_overrides("dpo_cot", args, out), "trainer=ddp", "trainer.devices=2"]
    ddp = Check("ddp", [*cli, "train", *ddp_args], 75, phase=3)
    ddp.argv[ddp.argv.index(f"out_dir={out / 'runs'}")] = f"out_dir={out / 'runs-ddp'}"
    if args.device != "cuda" or gpus < 2:
        ddp.skipped = f"{gpus} GPU" if args.device == "cuda" else "CPU (tests/test_ddp.py covers DDP over gloo)"
    checks.append(ddp)
    for check in checks:
        check.timeout *= time_scale(args)
    return [c for c in checks if not args.only or c.name in args.only.split(",")]


def time_scale(args: argparse.Namespace) -> float:
    """What the time limits and the budget are multiplied by: ``--time-scale``, else 1 on the GPU
    and ``CPU_SLOWDOWN`` for the CPU dry run."""
    return args.time_scale or (1.0 if args.device == "cuda" else CPU_SLOWDOWN)


def blocker(folder: Path) -> Path:
    """A ``sitecustomize`` that makes ``OPTIONAL_MODULES`` unimportable (as on the GPU image)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["import sys", "", f"for _name in {OPTIONAL_MODULES!r}:", "    sys.modules[_name] = None", ""]
    (folder / "sitecustomize.py").write_text("\n".join(lines))
    return folder


def run_phase(checks: list[Check], out: Path, env: dict[str, str], seconds_left: float) -> list[dict]:
    """Run checks side by side (each one's output in ``<out>/<name>.log``); their summary rows."""
    rows: list[dict] = []
    running = []
    for check in checks:
        row: dict = {"name": check.name, "status": "skipped", "seconds": 0.0, "detail": check.skipped}
        rows.append(row)
        limit = min(check.timeout, seconds_left)
        if check.skipped or limit < 10:
            row["detail"] = check.skipped or "no time left in the budget"
            continue
        log = out / f"{check.name}.log"
        f = open(log, "w")  # noqa: SIM115 - closed below, when the process has ended
        f.write("$ " + " ".join(check.argv) + "\n")
        f.flush()
        process = subprocess.Popen(check.argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        running.append((row, process, f, log, limit, time.perf_counter()))
    for row, process, f, log, limit, started in running:
        try:
            code = process.wait(timeout=max(0.0, started + limit - time.perf_counter()))
            row["status"] = "ok" if code == 0 else f"FAIL (exit {code})"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            row["status"] = f"TIMEOUT ({limit:.0f} s)"
        f.close()
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["detail"] = describe(row["name"], out) if row["status"] == "ok" else f"see {log.name}: {last_line(log)}"
    return rows


def last_line(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1][-160:] if lines else ""


def describe(name: str, out: Path) -> str:
    """The figures of a finished check, with the targets where there are some."""
    if name == "bench":
        return bench_summary(json.loads((out / "bench.json").read_text()))
    if name == "equivalence":
        result = json.loads((out / "equivalence.json").read_text())
        parts = [
            f"{r['dtype']}{' compiled' if r['compiled'] else ''}: "
            + ("tokens equal" if r["tokens_equal"] else f"first difference at new token {r['first_difference']}")
            + ("" if r["replay_equal"] else ", replay differs")
            for r in result["runs"]
        ]
        weights = "weights bit-identical" if result["weights_bit_identical"] else "WEIGHTS CHANGED"
        return "; ".join([*parts, weights])
    runs = out / ("runs-ddp" if name == "ddp" else "runs")
    experiment = "dpo_cot" if name == "ddp" else name
    finished = sorted((runs / experiment).glob("*/summary.json"))
    if not finished:
        return "no summary.json written"
    test = json.loads(finished[-1].read_text())["test"]
    return f"trained and tested ({int(test['n'])} test clips, JS {test['js']:.3f})"


def bench_summary(results: dict) -> str:
    """The bench's headline figures against the targets."""
    parts = []
    steps = results["steps"]
    if "sft" in steps:
        sft = steps["sft"]
        mfu = sft.get("mfu")
        mark = "" if mfu is None else (" (target met)" if mfu >= TARGETS["sft_mfu"] else " (BELOW 45 % target)")
        parts.append(
            f"SFT {sft['tokens_per_second']:.0f} tok/s, MFU {'n/a' if mfu is None else f'{100 * mfu:.1f} %'}{mark}"
        )
    for name in ("dpo", "grpo", "grpoz"):
        if name in steps:
            parts.append(
                f"{name} {steps[name]['seconds_per_step']:.2f} s/step, peak {steps[name]['peak_memory_gb']:.1f} GB"
            )
    rollouts = results.get("rollouts") or {}
    if rollouts:
        fast, speedup = rollouts["fast"]["tokens_per_second"], rollouts["speedup"]
        met = fast >= TARGETS["fast_tokens_per_second"] and speedup >= TARGETS["fast_speedup"]
        parts.append(
            f"rollouts K={results['group']}: fast {fast:.0f} tok/s vs generate "
            f"{rollouts['generate']['tokens_per_second']:.0f} ({speedup:.1f}x)"
            + (" (target met)" if met else " (BELOW 1,300 tok/s and 10x target)")
        )
    return "; ".join(parts)


def format_summary(rows: list[dict], header: str) -> str:
    """The printed table: one line per check."""
    lines = [header, f"{'check':<13}{'status':<18}{'seconds':>8}  figures"]
    lines += [f"{r['name']:<13}{r['status']:<18}{r['seconds']:>8.1f}  {r['detail']}" for r in rows]
    return "\n".join(lines)


def device_header(device: str) -> tuple[str, int]:
    """A line naming the machine and software, and the number of GPUs."""
    import platform

    import torch
    import transformers

    gpus = torch.cuda.device_count() if device == "cuda" else 0
    name = torch.cuda.get_device_name(0) if gpus else "CPU"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    software = f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    return f"ambemo device check, {stamp}: {gpus or 1} x {name}; {software}", gpus


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    args.corpus = str(Path(args.corpus).resolve())
    header, gpus = device_header(args.device)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}  # a killed check keeps its log
    env.pop("AMBEMO_RUN_DIR", None)
    if args.device == "cpu":  # as on the GPU image: the optional packages are not there
        env["PYTHONPATH"] = os.pathsep.join([str(blocker(out / ".without-optional")), env["PYTHONPATH"]])
    if not (Path(args.corpus) / "corpus.json").is_file():
        print(f"ambemo gpucheck: no corpus at {args.corpus} (make wheelhouse writes one)", file=sys.stderr)
        return 2
    print(header, flush=True)
    deadline = time.perf_counter() + BUDGET * time_scale(args)
    rows = []
    checks = plan(args, gpus)
    for phase in sorted({c.phase for c in checks}):
        for row in run_phase([c for c in checks if c.phase == phase], out, env, deadline - time.perf_counter()):
            print(f"  {row['name']}: {row['status']} ({row['seconds']:.0f} s)", flush=True)
            rows.append(row)
    table = format_summary(rows, header)
    print("\n" + table)
    (out / "summary.txt").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"header": header, "checks": rows}, indent=2) + "\n")
    print(f"\nwrote {out}/summary.txt, summary.json and one log per check")
    return 0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1


# ---- the equivalence check ------------------------------------------------------------------


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where two token lists differ (a length difference counts), or None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def rollout_equivalence(device: str, dtype: str, new_tokens: int = 24, group: int = 2) -> dict:
    """The fast engine against ``generate``, greedy, on the tiny model with non-zero LoRA after
    two checkpointed training steps: the generated tokens, a second fast call (on CUDA, the replay
    of the captured decode graph) and the weights afterwards."""
    import torch

    from ambemo.bench import bench_clips
    from ambemo.config import compose
    from ambemo.model.backbone import load_backbone
    from ambemo.model.generation import generate_sequences
    from ambemo.model.inputs import PromptEncoder
    from ambemo.model.readout import forward_logits
    from ambemo.objectives.distribution import token_cross_entropy

    torch.manual_seed(0)
    cfg = compose("sft_cot", ["model.finetune=lora", "model.gradient_checkpointing=true", f"model.dtype={dtype}"])
    backbone = load_backbone(cfg.model, cfg.data.classes)
    model = backbone.model.to(device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # adapters that change every output
    encoder = PromptEncoder(backbone, backbone.prompt_classes, use_cot=True)
    classes = len(cfg.data.classes)
    clips = bench_clips(1, 1.0, 24, classes) + bench_clips(1, 1.7, 24, classes, seed=1)  # left padding
    on_device = lambda batch: {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}  # noqa: E731
    train_batch = on_device(encoder.training_batch(clips))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):  # checkpointed training steps, as between rollouts
        token_cross_entropy(forward_logits(model, train_batch), train_batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prompts = on_device(encoder.prompt_batch(clips))
    start = prompts["input_ids"].shape[1]

    def rollout(engine: str) -> list[list[int]]:
        model.eval()
        sequences = generate_sequences(backbone, prompts, new_tokens, group=group, engine=engine)
        model.train()
        return sequences[:, start:].tolist()

    plain = rollout("generate")
    fast, again = rollout("fast"), rollout("fast")
    difference = [first_difference(p, f) for p, f in zip(plain, fast, strict=True)]
    return {
        "dtype": dtype,
        "compiled": device.startswith("cuda"),  # the engine compiles its decode step on CUDA only
        "tokens_equal": fast == plain,
        "first_difference": min((d for d in difference if d is not None), default=None),
        "replay_equal": again == fast,
        "weights_bit_identical": all(torch.equal(p, before[n]) for n, p in model.named_parameters()),
        "rows": len(plain),
        "new_tokens": new_tokens,
    }


def equivalence_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ambemo.gpucheck equivalence")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        runs = [rollout_equivalence(args.device, "bfloat16")]
        if not (runs[0]["tokens_equal"] and runs[0]["replay_equal"]):  # precision or logic? float32 tells
            runs.append(rollout_equivalence(args.device, "float32"))
    else:
        runs = [rollout_equivalence(args.device, "float32")]
    result = {
        "device": args.device,
        "runs": runs,
        "weights_bit_identical": all(r["weights_bit_identical"] for r in runs),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["weights_bit_identical"] and all(r["tokens_equal"] and r["replay_equal"] for r in runs) else 1


# ---- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["equivalence"]:
        return equivalence_main(argv[1:])
    if argv[:1] == ["wheelhouse"] and len(argv) == 2:
        folder = Path(argv[1])
        problems = check_wheelhouse(folder)
        size = sum(w.stat().st_size for w in folder.glob("*.whl")) / 2**20
        print("\n".join(problems) or f"{folder}: {len(list(folder.glob('*.whl')))} wheels, {size:.1f} MiB: ok")
        return 1 if problems else 0
    if argv[:1] == ["corpus"] and len(argv) == 2:
        from ambemo.data.synthetic import generate_corpus

        print(generate_corpus(argv[1], workers=1, **CORPUS_SIZES))
        return 0
    parser = argparse.ArgumentParser(prog="python -m ambemo.gpucheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/gpu-check", help="folder for every output (default: runs/gpu-check)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny scale everywhere (the CPU dry run)")
    parser.add_argument("--corpus", default=str(REPO / "wheelhouse" / "corpus"), help="the small synthetic corpus")
    parser.add_argument("--only", default="", help="comma-separated checks (default: all)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help=f"multiply the time limits and the {BUDGET:.0f} s budget (default: 1 on a GPU, {CPU_SLOWDOWN} on a CPU)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not __import__("torch").cuda.is_available():
        parser.error("--device cuda: no GPU here (the CPU dry run is --device cpu --tiny)")
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())

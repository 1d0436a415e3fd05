# ambemo: `make help` lists the targets. Set-up happens once, as a dependency of the others.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ambemo-installed
NAME ?= sft_cot
ARGS ?=
LOCK := requirements/cpu-lock.txt
WHEELHOUSE ?= wheelhouse
GPU_CHECK_OUT ?= runs/gpu-check

.DEFAULT_GOAL := help
TRIALS ?=
SEEDS ?=
SEEDS_HEADROOM ?= 3
BASELINE ?= sft_cot
TEST_WORKERS ?= auto
.PHONY: help setup exp folds test lint format report headroom data clean bench sweep sweep-local browser wheelhouse gpu-check

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv: ambemo with every extra, at the versions of requirements/cpu-lock.txt (once; again when either changes)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, then torchaudio against that same torch (a matching pair, both pinned by the lock)
	$(BIN)/python -m pip install -q -c $(LOCK) torch
	$(BIN)/python -m pip install -q -c $(LOCK) torch torchaudio
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[all,dev]'
	touch $@

exp: setup ## Run an experiment: make exp NAME=sft_cot [SEEDS=3] [ARGS="trainer.max_epochs=2 logger=csv"]
	$(BIN)/ambemo train experiment=$(NAME) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

folds: setup ## IEMOCAP 5-fold leave-one-session-out, fold-averaged row: make folds NAME=paper/sft_cot_iemocap [ARGS="model.path=..."]
	$(BIN)/ambemo folds experiment=$(NAME) $(ARGS)

test: setup browser ## Run the test suite (CPU, tiny model) on every core [TEST_WORKERS=auto|N|0] [ARGS=...]
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

browser: ## Chromium + chromedriver for the demo-page test (apt-get, as root, only when missing)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "make browser: no chromium/chromedriver and not root with apt-get: install them, or the demo-page test skips (fails with CI=true)"; fi

lint: setup ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

report: setup ## Results per run and seed (95 % CIs), mean ± sd over seeds, paired differences to BASELINE (default sft_cot)
	$(BIN)/ambemo report --seeds $(if $(BASELINE),--baseline $(BASELINE)) --out runs/report.md --csv runs/report.csv

headroom: setup ## Headroom protocol: headroom/sft_cot_1ep, then DPO/GRPO/GRPO_z from it, 3 seeds; paired table
	for exp in sft_cot_1ep dpo_cot grpo_cot grpoz_cot; do \
	  $(BIN)/ambemo train experiment=headroom/$$exp --seeds $(SEEDS_HEADROOM) $(ARGS) || exit 1; done
	$(BIN)/ambemo report runs/headroom --seeds --baseline headroom/sft_cot_1ep --out runs/headroom/report.md

bench: setup ## Step and rollout speed (tiny on CPU; ARGS="--size 7b" on a GPU; see ambemo bench --help)
	$(BIN)/ambemo bench $(ARGS)

sweep: setup ## W&B sweep of experiments/sweeps/$(NAME).yaml: wandb sweep + wandb agent (needs a W&B server and WANDB_API_KEY)
	@export PATH="$(CURDIR)/$(BIN):$$PATH"; \
	mkdir -p runs; wandb sweep experiments/sweeps/$(NAME).yaml 2>&1 | tee runs/.sweep-$(NAME).log || exit 1; \
	agent=$$(sed -n 's/.*wandb agent \([^ ]*\).*/\1/p' runs/.sweep-$(NAME).log | tail -n 1); \
	test -n "$$agent" || { echo "make sweep: wandb sweep created no sweep (see above); without a server use: make sweep-local NAME=$(NAME)"; exit 1; }; \
	wandb agent $$agent

sweep-local: setup ## The same sweep file run here with optuna: make sweep-local NAME=sft_cot [TRIALS=8] [ARGS="key=value ..."]
	$(BIN)/ambemo sweep $(NAME) $(if $(TRIALS),--trials $(TRIALS)) $(ARGS)

data: setup ## Generate the built-in synthetic corpus into data/builtin (done on first use anyway)
	$(BIN)/ambemo data data/builtin

wheelhouse: setup ## Python 3.12 wheels of what the GPU image lacks (requirements/wheelhouse.txt) and a small corpus, into wheelhouse/
	rm -f $(WHEELHOUSE)/*.whl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-r requirements/wheelhouse.txt -d $(WHEELHOUSE)
	$(BIN)/python -m ambemo.gpucheck wheelhouse $(WHEELHOUSE)
	$(BIN)/python -m ambemo.gpucheck corpus $(WHEELHOUSE)/corpus

# On the GPU image (no .venv, no network): the wheels go into their own folder, with --no-deps, so
# the image's torch and everything else it has stay as they are.
gpu-check: ## On the GPU image: install wheelhouse/ beside its packages, then the device check (< 8 min) into runs/gpu-check
	$(PYTHON) -m pip install -q --no-deps --no-index --target $(WHEELHOUSE)/site $(WHEELHOUSE)/*.whl || \
		for w in $(WHEELHOUSE)/*.whl; do $(PYTHON) -m zipfile -e $$w $(WHEELHOUSE)/site || exit 1; done
	PYTHONPATH="$(CURDIR):$(CURDIR)/$(WHEELHOUSE)/site" $(PYTHON) -m ambemo.gpucheck --out $(GPU_CHECK_OUT) --corpus $(WHEELHOUSE)/corpus $(ARGS)

clean: ## Remove runs and generated data (keeps .venv)
	rm -rf runs data/builtin

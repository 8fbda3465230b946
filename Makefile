# semid: the two commands are `make reproduce` and `make test`; each sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stage commands call `python`: make it the venv's, activated or not.
export PATH := $(abspath $(BIN)):$(PATH)
# The shared MovieLens copy beside the repo (developers, CI); elsewhere the pipeline downloads.
MIRROR ?= $(abspath ../shared/data/movielens)
export SEMID_MOVIELENS_MIRROR ?= $(if $(wildcard $(MIRROR)),$(MIRROR),)
PYTEST_ARGS ?=

.PHONY: help venv reproduce test test-slow summary dag ui clean params

help:
	@echo "make reproduce   set up .venv, run the DVC pipeline, print the metrics"
	@echo "make test        set up .venv, run the test suite (make test-slow: end-to-end too)"
	@echo "make ui          MLflow UI on http://127.0.0.1:5000"
	@echo "make dag         the pipeline graph"
	@echo "make clean       remove pipeline outputs (keeps .venv and the DVC cache)"
	@echo "make params      rewrite params.yaml from the defaults in src/semid/config.py"
	@echo "make grid        the paper's grid in main, SEEDS= (1 2 3), each finished point committed; resumes"
	@echo "make grid-queue  every embedding x quantizer as queued DVC experiments (EMBEDDINGS=, QUANTIZERS=, N= workers)"
	@echo "                 SHARD=i/n: machine i of n runs its share, pushes it to GIT_REMOTE (origin)"
	@echo "make pull-grid   dvc exp pull every experiment of this commit from GIT_REMOTE (and their outputs)"
	@echo "make results     results/table.md (findings, means +- sd, intervals, paired tests) + plots from the grid in main"
	@echo "make report      the RQ-VAE diagnosis: reports/rqvae.md"
	@echo "make remote      default DVC remote in ../semid-dvc-remote (REMOTE=...)"
	@echo "make paper-dry-run  the paper profile on a small offline slice"

# Re-install only when the lock or the package metadata changes.
$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

venv: $(BIN)/.installed

# DVC needs a git repo and .dvc/ to run; a tarball or a fresh copy may lack either.
.dvc/config:
	@test -d .git || git init -q
	$(BIN)/dvc init -q 2>/dev/null || true

reproduce: venv .dvc/config
	$(BIN)/dvc repro
	@$(MAKE) --no-print-directory summary

summary: venv
	@$(BIN)/python -m semid.summary

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# params.yaml is rendered from the config dataclasses, the one source of defaults and comments.
params: venv
	$(BIN)/python -m semid.params_file > params.yaml.tmp && mv params.yaml.tmp params.yaml

dag: venv
	$(BIN)/dvc dag

ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host 127.0.0.1 --port 5000

clean: venv
	rm -rf $$($(BIN)/python -m semid.artifacts)

# ---- experiments: the grid, results, the RQ-VAE report, remote artifacts, paper dry run ----
# make grid SEEDS="1 2 3" EMBEDDINGS="content multitask" QUANTIZERS="rqkmeans rqvae": the paper's points among these
SEEDS ?= 1 2 3
EMBEDDINGS ?= content search rec multitask concat svd separate prefix_share
QUANTIZERS ?= rqkmeans rqvae rqvae_naive dictlearn rlfq
N ?= 1
GRID_ARGS ?=
# make grid-queue SHARD=2/3: this machine's share of the queued grid, pushed to GIT_REMOTE (outputs: default DVC remote)
SHARD ?=
GIT_REMOTE ?= origin
REPORT_ARGS ?=
DRY_RUN_ARGS ?=
# A DVC remote in a folder outside the repo; S3/GCS examples in README "Remote artifacts".
REMOTE ?= $(abspath ../semid-dvc-remote)

.PHONY: grid grid-queue pull-grid results report remote paper-dry-run

# The paper's grid in main (grid/dvc.yaml): each finished point x seed is committed; reruns resume.
grid: venv .dvc/config
	$(BIN)/python -m semid.paper_grid --seeds "$(SEEDS)" --embeddings "$(EMBEDDINGS)" --quantizers "$(QUANTIZERS)" $(GRID_ARGS)

# Every embedding x quantizer as queued DVC experiments (N= workers; SHARD=i/n across machines).
grid-queue: venv .dvc/config
	$(BIN)/python -m semid.grid --embeddings "$(EMBEDDINGS)" --quantizers "$(QUANTIZERS)" -j $(N) \
		$(if $(SHARD),--shard "$(SHARD)" --push "$(GIT_REMOTE)") $(GRID_ARGS)

pull-grid: venv .dvc/config
	$(BIN)/python -m semid.grid --pull "$(GIT_REMOTE)"

results: venv
	$(BIN)/python -m semid.results

report: venv .dvc/config
	$(BIN)/python -m semid.report -j $(N) $(REPORT_ARGS)

remote: venv .dvc/config
	mkdir -p "$(REMOTE)"
	$(BIN)/dvc remote add --local --default --force local "$(REMOTE)"
	@echo "default DVC remote 'local' -> $(REMOTE) (in .dvc/config.local); now: dvc push / dvc pull"

paper-dry-run: venv
	$(BIN)/python -m semid.paper_dry_run $(DRY_RUN_ARGS)

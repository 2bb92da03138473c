# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
export HF_HUB_OFFLINE ?= 1

.PHONY: run test test-fast rehearse bench bench-quick bench-gpu bench-gpu-wheels clean-results

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The model jobs fork from one interpreter that imported torch and the model libraries once
# (datadream_core/warm_start.py); each still records its own cost for the compute table.
run: $(STAMP)
	$(BIN)/python -m datadream_core.warm_start --run $(BIN)/snakemake --cores $(CORES) --configfile config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config.yaml --report report.html
	@echo "Report written to report.html"

# Tests run on TEST_WORKERS processes (pytest-xdist): a test module stays on one worker, the smoke run that
# several modules read is made once, the longest modules start first, and the model jobs of local workflow runs
# fork from one warm server per worker (tests/conftest.py, datadream_core/warm_start.py). Three workers on two
# cores: much of a workflow test is waiting (SLURM's status polling, a lock on the shared smoke run), which a
# third worker fills.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: every test that does not drive Snakemake (tests marked e2e are left out).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not e2e"

# The paper's setting on real-size models with random weights and a fabricated dataset (docs/rehearsal.md): the
# models and the data are made first, as `snakemake models` and a real dataset are there before a paper run; then
# every job runs once and benchmarks/rehearsal.py prints each rule's peak memory beside the profile's asks.
REHEARSAL := --configfile configs/rehearsal.yaml
rehearse: $(STAMP)
	$(BIN)/snakemake real_size_models results/fabricated/coop/dtd --cores $(CORES) $(REHEARSAL)
	$(BIN)/snakemake --cores $(CORES) $(REHEARSAL)
	$(BIN)/python benchmarks/rehearsal.py --out benchmarks/results-rehearsal.json
	$(BIN)/python -m pytest -q -m rehearsal tests/test_rehearsal.py

clean-results:
	rm -rf results logs .snakemake report.html

# Per-stage benchmarks, our path against the released code's behaviour (benchmarks/README.md).
# BENCH_ARGS passes options through, e.g. BENCH_ARGS="--device cuda" or BENCH_ARGS="--threads 2".
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --real-size --out benchmarks/results.json $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick --out benchmarks/results.json $(BENCH_ARGS)

# The GPU benchmark (benchmarks/gpu.py) on a CUDA machine, or with BENCH_ARGS="--tiny --out FILE" on a CPU.
# It uses .venv where there is one; elsewhere python3 and the wheels of bench-gpu-wheels.
bench-gpu:
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) bash benchmarks/gpu_run.sh $(BENCH_ARGS)

# Wheels for a GPU machine without network that has Python 3.12, CUDA torch, transformers, peft and timm: the
# project's pins of diffusers, open_clip_torch and pytorch-fid and their other dependencies, each named (no
# resolver runs).
GPU_WHEELS := .gpu-wheels
GPU_WHEEL_DEPS := ftfy==6.3.1 wcwidth==0.9.4 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
	referencing==0.37.0 rpds-py==2026.9.1
bench-gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		--dest $(GPU_WHEELS) $(shell grep -E '^(diffusers|open_clip_torch|pytorch-fid)==' constraints.txt) $(GPU_WHEEL_DEPS)
	@du -sh $(GPU_WHEELS)

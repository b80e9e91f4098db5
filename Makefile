# bids_agquant: `make test` installs and runs the tests; `make demo` installs and runs the
# whole pipeline (participant + group) on data/sample_bids. Both need only Python 3.11.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out
DEMO_WORK ?= demo_work
NPROCS ?= 2

.PHONY: install test test-fast demo bench clean container-check container-check-all

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -n $(NPROCS) --dist loadfile -m "not slow"

demo: install
	$(BIN)/bids-agquant data/sample_bids $(DEMO_OUT) participant -w $(DEMO_WORK) --nprocs $(NPROCS)
	$(BIN)/bids-agquant data/sample_bids $(DEMO_OUT) group
	@echo "Demo outputs in $(DEMO_OUT)/ (reports: $(DEMO_OUT)/sub-*.html, $(DEMO_OUT)/group/report.html)"

# build the image with podman (base made without a registry) and run the container checks
container-check: install
	bash scripts/container_check.sh

# the same with every check under docker too (CI leaves out docker's Apptainer-like run)
container-check-all: install
	DOCKER_CHECKS=all bash scripts/container_check.sh

bench: install
	$(BIN)/python benchmarks/bench_vfa.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) $(DEMO_WORK) .pytest_cache

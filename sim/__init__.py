"""qaccel.sim: configuration, integer arithmetic and everything that models the machine.

Needs only numpy: the cycle model runs without Amaranth or torch installed.
"""

from .arith import quantize_multiplier, requantize, wrap
from .config import ArrayConfig
from .job import GemmJob, random_job
from .network import IntLayer, IntNetwork, QParams
from .reference import reference_gemm, run_reference
from .schedule import gemm_cycles, tiling

__all__ = ["ArrayConfig", "GemmJob", "random_job", "reference_gemm", "run_reference",
           "gemm_cycles", "tiling",
           "wrap", "requantize", "quantize_multiplier", "IntNetwork", "IntLayer", "QParams"]

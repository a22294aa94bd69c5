"""qaccel.quant: post-training quantization (Nagel et al. 2021 whitepaper) exported as the
integers the accelerator runs. See ``docs/quant.md``.

Public API: :func:`quantize`, :class:`QuantConfig`, :func:`export`, plus the building
blocks (quantizers, range setting, BN folding, CLE, bias correction, sensitivity report).
"""

from .config import QuantConfig
from .export import export, integer_outputs
from .modules import QuantAdd, QuantAvgPool, QuantLayer, quant_layers, quant_state
from .pipeline import QuantInfo, quantize, refresh_scales, run_batch
from .quantizers import Quantizer, fake_quantize, int_grid, qparams_from_range
from .sensitivity import SensitivityReport, sensitivity_report

__all__ = ["QuantConfig", "quantize", "refresh_scales", "export", "integer_outputs",
           "QuantInfo", "run_batch",
           "Quantizer", "fake_quantize", "int_grid", "qparams_from_range", "QuantLayer",
           "QuantAdd", "QuantAvgPool", "quant_layers", "quant_state", "sensitivity_report",
           "SensitivityReport"]

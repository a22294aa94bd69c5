"""qaccel.quant: post-training quantization (Nagel et al. 2021 whitepaper) exported as the
integers the accelerator runs. See ``docs/quant.md``.

Public API: :func:`quantize`, :class:`QuantConfig`, :func:`export`, plus the building
blocks (quantizers, range setting, BN folding, CLE, bias correction, sensitivity report).
"""

from .calib_data import run_batch
from .capture import capture
from .config import LayerOverride, QuantConfig, QuantizerOverride
from .export import exact_mode, exact_outputs, export, integer_outputs
from .modules import QuantAct, QuantAdd, QuantAvgPool, QuantLayer, quant_layers, quant_state
from .pipeline import quantize
from .qat import QatConfig, finalize_qat, prepare_qat, train_qat
from .quantizers import Quantizer, fake_quantize, int_grid, qparams_from_range
from .scales import refresh_scales
from .sensitivity import SensitivityReport, sensitivity_report
from .summary import FallbackWarning, QuantInfo, QuantSummary, summarize

__all__ = ["QuantConfig", "LayerOverride", "QuantizerOverride", "quantize", "capture",
           "refresh_scales", "export",
           "integer_outputs", "exact_mode", "exact_outputs", "QuantInfo", "QuantSummary",
           "summarize", "FallbackWarning",
           "run_batch",
           "Quantizer", "fake_quantize", "int_grid", "qparams_from_range", "QuantLayer",
           "QuantAdd", "QuantAvgPool", "QuantAct", "quant_layers", "quant_state",
           "sensitivity_report",
           "SensitivityReport", "QatConfig", "prepare_qat", "train_qat", "finalize_qat"]

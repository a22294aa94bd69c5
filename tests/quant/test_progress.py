"""Progress bars of the long steps (AdaRound, Bit-split, sensitivity): "auto" shows them
only when stderr is a terminal; True / False force them."""

import io
import sys

import pytest
import torch
from qaccel.quant import QuantConfig
from qaccel.quant.progress import bar
from qmodels import seq_cnn

from qaccel import quant


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _drain(progress):
    list(bar(range(3), progress, desc="step-x", unit="layer"))


def test_bar_auto_follows_the_terminal(monkeypatch):
    for stream, shown in ((io.StringIO(), False), (_Tty(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        _drain("auto")
        assert ("step-x" in stream.getvalue()) is shown
    for progress, shown in ((True, True), (False, False)):
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        _drain(progress)
        assert ("step-x: 100%" in stream.getvalue()) is shown
    with pytest.raises(ValueError, match="progress must be 'auto', True or False; got 'yes'"):
        _drain("yes")
    with pytest.raises(ValueError, match="QuantConfig.progress must be"):
        QuantConfig(progress=1)


@pytest.mark.parametrize("rounding, label", [("adaround", "AdaRound"),
                                             ("bitsplit", "Bit-split")])
def test_rounding_shows_a_bar_per_layer(rounding, label, monkeypatch):
    x = torch.randn(32, 3, 8, 8)
    for progress, stream in ((True, io.StringIO()), ("auto", io.StringIO()),
                             ("auto", _Tty())):
        monkeypatch.setattr(sys, "stderr", stream)
        quant.quantize(seq_cnn(), [x], QuantConfig(rounding=rounding, iterations=5,
                                                   progress=progress))
        shown = progress is True or isinstance(stream, _Tty)
        assert (f"{label}: 100%" in stream.getvalue()) is shown, stream.getvalue()
        if shown:
            assert "4/4" in stream.getvalue()                     # one step per layer


def test_sensitivity_shows_a_bar(monkeypatch):
    x = torch.randn(16, 3, 8, 8)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    quant.sensitivity_report(seq_cnn(), [x], QuantConfig(progress=True))
    assert "sensitivity: 100%" in stream.getvalue()
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    quant.sensitivity_report(seq_cnn(), [x], QuantConfig(progress=True), progress=False)
    assert stream.getvalue() == ""

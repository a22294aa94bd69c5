"""sim.workload: GEMM workloads and their validation messages."""

from __future__ import annotations

import pytest
from qaccel.sim.workload import GemmWorkload, conv_workload


def test_conv_lowering():
    w = conv_workload("c", 8, 10, 6, 12, (3, 5), stride=(1, 2), padding=(1, 2), groups=3,
                      batch=2)
    assert (w.T, w.K, w.N, w.repeat) == (2 * 8 * 5, 3 * 5 * 2, 4, 3)
    assert w.input_elems == 2 * 8 * 10 * 2 and w.macs == w.repeat * w.T * w.K * w.N


@pytest.mark.parametrize(("make", "message"), [
    (lambda: GemmWorkload("fc", 0, 4, 4), "GemmWorkload('fc').T must be >= 1, not 0"),
    (lambda: GemmWorkload("fc", 4, 4.0, 4),
     "GemmWorkload('fc').K must be an integer >= 1, not 4.0"),
    (lambda: GemmWorkload("fc", 4, 4, 4, op="fft"),
     "GemmWorkload('fc').op must be one of 'gemm', 'conv2d', 'depthwise', 'linear', "
     "'matmul', not 'fft'"),
    (lambda: GemmWorkload("", 4, 4, 4), "GemmWorkload.name must be a non-empty string, not ''"),
    (lambda: conv_workload("c1", 8, 8, 6, 12, 3, groups=4),
     "conv2d('c1').groups must be a divisor of in_ch = 6 and out_ch = 12, not 4"),
    (lambda: conv_workload("c1", 8, 8, 6, 12, 3, padding=-1),
     "conv2d('c1').pad_h must be >= 0, not -1"),
    (lambda: conv_workload("c1", 8, 8, 6, 12, (3, 3, 3)),
     "conv2d('c1').kernel must be an int or a pair of ints, not (3, 3, 3)"),
    (lambda: conv_workload("c1", 4, 4, 6, 12, 7, padding=1),
     "conv2d('c1').kernel must be at most the padded 6x6 input (dilation 1x1: the output "
     "would be 0x0), not (7, 7)"),
])
def test_messages_name_the_layer_and_field(make, message):
    with pytest.raises(ValueError) as exc:
        make()
    assert str(exc.value) == message

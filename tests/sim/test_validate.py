"""sim.validate: one message format for every validated record."""

from __future__ import annotations

import re

import numpy as np
import pytest
from qaccel.sim.validate import (
    check_acc_bits,
    check_bool,
    check_choice,
    check_int,
    check_number,
)

#: <Owner>.<field>[ + <field>] must be <allowed>, not <value>
FORMAT = re.compile(r"^[A-Z][\w.\[\]'()]*\.\w+( \+ \w+)? must be .+, not \S+$")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: check_int("ArrayConfig", "rows", 0, 2, 256),
     "ArrayConfig.rows must be in [2, 256], not 0"),
    (lambda: check_int("ArrayConfig", "rows", 4.0, 2, 256),
     "ArrayConfig.rows must be an integer in [2, 256], not 4.0"),
    (lambda: check_int("ArrayConfig", "rows", True, 2, 256),
     "ArrayConfig.rows must be an integer in [2, 256], not True"),
    (lambda: check_int("GemmWorkload('fc')", "T", 0, 1),
     "GemmWorkload('fc').T must be >= 1, not 0"),
    (lambda: check_int("X", "n", "3", 1),
     "X.n must be an integer >= 1, not '3'"),
    (lambda: check_int("GemmJob", "T", 70000, 1, 65535, why="dim_bits=16"),
     "GemmJob.T must be in [1, 65535] (dim_bits=16), not 70000"),
    (lambda: check_bool("ArrayConfig", "a_signed", 1),
     "ArrayConfig.a_signed must be a bool, not 1"),
    (lambda: check_choice("QuantConfig", "rounding", "stochastic", ("nearest", "adaround")),
     "QuantConfig.rounding must be one of 'nearest', 'adaround', not 'stochastic'"),
    (lambda: check_number("QParams", "scale", float("nan"), positive=True),
     "QParams.scale must be a finite number > 0, not nan"),
    (lambda: check_acc_bits("ArrayConfig", 16, 16, 32, 31),
     "ArrayConfig.acc_bits + mult_bits must be <= 62: w_bits + a_bits = 32 needs "
     "acc_bits >= 32, so mult_bits must be <= 30, not 31"),
    (lambda: check_acc_bits("QuantConfig", 8, 8, 50, 16),
     "QuantConfig.acc_bits must be in [16, 46] (w_bits + a_bits = 16 <= acc_bits <= 62 - "
     "mult_bits = 46), not 50"),
])
def test_messages(call, message):
    with pytest.raises(ValueError) as exc:
        call()
    assert str(exc.value) == message
    assert FORMAT.match(message)


def test_values_come_back_plain():
    assert type(check_int("A", "n", np.int16(5), 0, 9)) is int
    assert check_bool("A", "b", np.bool_(True)) is True
    assert check_number("A", "x", np.float32(0.5), positive=True) == 0.5
    assert check_choice("A", "c", "mse", ("minmax", "mse")) == "mse"
    assert check_acc_bits("A", 8, 8, 16, 46) == 16


def test_true_is_not_the_choice_1():
    with pytest.raises(ValueError, match=r"A\.c must be one of 1, 2, not True"):
        check_choice("A", "c", True, (1, 2))


def test_an_empty_range_is_never_printed():
    """Empty ranges are a caller bug (check the bounding fields first), not a message."""
    with pytest.raises(AssertionError, match="empty range"):
        check_int("A", "n", 5, 32, 31)
    for w in range(2, 17):
        for a in range(2, 17):
            for m in range(1, 33):
                try:
                    check_acc_bits("A", w, a, 32, m)
                except ValueError as exc:
                    lo_hi = re.search(r"in \[(\d+), (\d+)\]", str(exc))
                    assert lo_hi is None or int(lo_hi[1]) <= int(lo_hi[2]), str(exc)

"""sim.config.ArrayConfig: validation with messages that name field, value and range; identity
helpers. (Not test_config.py: tests/quant/test_config.py has that basename, and pytest's
default import mode needs unique test-module basenames.)"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from qaccel.sim.config import ArrayConfig

RANGES = {
    "rows": (2, 256), "cols": (2, 256), "w_bits": (2, 16), "a_bits": (2, 16),
    "mult_bits": (1, 32), "acc_depth": (1, 65536), "dim_bits": (4, 24),
    "weight_buffer_kib": (1, 1 << 20), "act_buffer_kib": (1, 1 << 20),
    "out_buffer_kib": (1, 1 << 20),
}


def test_defaults_are_valid():
    cfg = ArrayConfig()
    assert cfg.acc_bits == 32 and not cfg.per_channel


@pytest.mark.parametrize("field", sorted(RANGES))
def test_out_of_range_fields_are_rejected(field):
    lo, hi = RANGES[field]
    # keep the derived acc_bits constraints satisfiable while the bit widths move
    base = {"acc_bits": 40, "mult_bits": 8} if field not in ("mult_bits",) else {"acc_bits": 24}
    for bad in (lo - 1, hi + 1, 0, -3):
        if lo <= bad <= hi:
            continue
        with pytest.raises(ValueError, match=rf"ArrayConfig\.{field} must be in \[{lo}, {hi}\], "
                                             rf"not {bad}$"):
            ArrayConfig(**{**base, field: bad})
    # both ends of the range are accepted
    for good in (lo, hi):
        if field in ("w_bits", "a_bits") and good == 16:
            ArrayConfig(**{"w_bits": 16, "a_bits": 16, "acc_bits": 40, "mult_bits": 8,
                           field: good})
        else:
            ArrayConfig(**{**base, field: good})


@pytest.mark.parametrize("bad", [4.0, "4", None, True, 2.5])
def test_non_integer_sizes_are_rejected(bad):
    with pytest.raises(ValueError, match=r"ArrayConfig\.rows must be an integer in \[2, 256\], "
                                         rf"not {bad!r}"):
        ArrayConfig(rows=bad)


@pytest.mark.parametrize("field", ["a_signed", "per_channel"])
@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_bool_fields_must_be_bool(field, bad):
    with pytest.raises(ValueError, match=rf"ArrayConfig\.{field} must be a bool, not {bad!r}"):
        ArrayConfig(**{field: bad})


def test_acc_bits_lower_bound_is_product_width():
    # one product must always fit: acc_bits >= w_bits + a_bits
    ArrayConfig(w_bits=8, a_bits=8, acc_bits=16)
    with pytest.raises(ValueError, match=r"ArrayConfig\.acc_bits must be in \[16, 46\] "
                                         r"\(w_bits \+ a_bits = 16 <= acc_bits <= 62 - "
                                         r"mult_bits = 46\), not 15"):
        ArrayConfig(w_bits=8, a_bits=8, acc_bits=15)


def test_acc_plus_mult_bits_fit_int64_product():
    ArrayConfig(acc_bits=30, mult_bits=32)
    with pytest.raises(ValueError, match=r"ArrayConfig\.acc_bits must be in \[16, 30\] "
                                         r"\(w_bits \+ a_bits = 16 <= acc_bits <= 62 - "
                                         r"mult_bits = 30\), not 31"):
        ArrayConfig(acc_bits=31, mult_bits=32)
    with pytest.raises(ValueError, match=r"ArrayConfig\.acc_bits must be in \[4, 60\], not 61"):
        ArrayConfig(acc_bits=61, mult_bits=1)


@pytest.mark.parametrize(("w", "a", "mult"), [(16, 16, 31), (16, 16, 32), (15, 16, 32)])
def test_impossible_width_pair_names_both_fields(w, a, mult):
    """W16A16 with mult_bits 31 leaves no acc_bits: the message names the pair of fields
    and what would work, never an empty range such as [32, 31]."""
    need = w + a
    with pytest.raises(ValueError) as exc:
        ArrayConfig(w_bits=w, a_bits=a, acc_bits=40, mult_bits=mult)
    assert str(exc.value) == (
        f"ArrayConfig.acc_bits + mult_bits must be <= 62: w_bits + a_bits = {need} needs "
        f"acc_bits >= {need}, so mult_bits must be <= {62 - need}, not {mult}")
    ArrayConfig(w_bits=w, a_bits=a, acc_bits=need, mult_bits=62 - need)   # the bound is tight


def test_numpy_scalars_are_accepted_as_plain_values():
    cfg = ArrayConfig(rows=np.int64(8), cols=np.arange(2, 5)[1], a_signed=np.bool_(True))
    assert cfg == ArrayConfig(rows=8, cols=3, a_signed=True)
    assert type(cfg.rows) is int and type(cfg.a_signed) is bool
    json.dumps(cfg.to_dict())       # stays serializable


def test_frozen_and_replace_revalidates():
    cfg = ArrayConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 8
    assert cfg.replace(rows=8).rows == 8
    with pytest.raises(ValueError, match=r"ArrayConfig\.cols must be in \[2, 256\], not 1"):
        cfg.replace(cols=1)


@pytest.mark.parametrize(("a_bits", "a_signed", "rng"),
                         [(8, False, (0, 255)), (8, True, (-128, 127)), (2, False, (0, 3)),
                          (2, True, (-2, 1)), (16, True, (-32768, 32767))])
def test_activation_range(a_bits, a_signed, rng):
    cfg = ArrayConfig(a_bits=a_bits, a_signed=a_signed, w_bits=2, acc_bits=32)
    assert cfg.a_range == rng


def test_other_ranges():
    cfg = ArrayConfig(w_bits=4, acc_bits=20, mult_bits=12, dim_bits=10)
    assert cfg.w_range == (-8, 7)
    assert cfg.acc_range == (-(1 << 19), (1 << 19) - 1)
    assert cfg.mult_range == (0, 4095)
    assert cfg.max_dim == 1023


def test_dict_round_trip_and_unknown_fields():
    cfg = ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, per_channel=True)
    assert ArrayConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"ArrayConfig has no field\(s\) \['colz'\]"):
        ArrayConfig.from_dict({**cfg.to_dict(), "colz": 4})
    with pytest.raises(ValueError, match=r"ArrayConfig\.rows must be in \[2, 256\], not 0"):
        ArrayConfig.from_dict({"rows": 0})


def test_rtl_key_tracks_rtl_fields_only():
    cfg = ArrayConfig()
    assert cfg.rtl_key() == ArrayConfig().rtl_key()
    assert cfg.rtl_key() == cfg.replace(act_buffer_kib=128).rtl_key()
    keys = {cfg.replace(**change).rtl_key() for change in
            ({}, {"rows": 8}, {"a_signed": True}, {"acc_bits": 24}, {"per_channel": True},
             {"acc_depth": 32}, {"mult_bits": 15})}
    assert len(keys) == 7


def test_tag():
    cfg = ArrayConfig(rows=3, cols=5, w_bits=2, a_bits=4, a_signed=False, acc_bits=16,
                      mult_bits=12, per_channel=True, acc_depth=8)
    assert cfg.tag() == "3x5_w2a4u_acc16_m12_pc_d8"

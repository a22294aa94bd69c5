import dataclasses

import pytest
from qaccel.quant import QuantConfig


def test_defaults_and_frozen():
    cfg = QuantConfig()
    assert (cfg.w_bits, cfg.a_bits, cfg.rounding) == (8, 8, "nearest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.w_bits = 4
    assert cfg.replace(w_bits=4).w_bits == 4


@pytest.mark.parametrize("field, value, words", [
    ("weight_range", "percentile", ["weight_range", "'minmax'", "'mse'", "'percentile'"]),
    ("act_range", "max", ["act_range", "'cross_entropy'", "'bn'"]),
    ("rounding", "stochastic", ["rounding", "'nearest'", "'adaround'", "'bitsplit'"]),
    ("bias_correction", True, ["bias_correction", "'empirical'", "'analytic'"]),
    ("w_bits", 1, ["w_bits", "[2, 16]"]),
    ("a_bits", 17, ["a_bits", "[2, 16]"]),
    ("w_bits", 4.0, ["w_bits", "integer"]),
    ("iterations", -1, ["iterations"]),
    ("per_channel", 1, ["per_channel", "bool"]),
    ("cle", "yes", ["cle", "bool"]),
    ("mult_bits", 40, ["mult_bits", "[1, 32]"]),
    ("bn_alpha", 0, ["bn_alpha", "> 0"]),
])
def test_bad_values_name_field_and_allowed(field, value, words):
    with pytest.raises(ValueError) as exc:
        QuantConfig(**{field: value})
    msg = str(exc.value)
    for w in words:
        assert w in msg, (w, msg)


def test_cross_field_checks():
    with pytest.raises(ValueError, match="acc_bits"):
        QuantConfig(acc_bits=50, mult_bits=16)
    with pytest.raises(ValueError, match=r"QuantConfig\.acc_bits must be in \[32, 46\] "
                                         r"\(w_bits \+ a_bits = 32 <= acc_bits"):
        QuantConfig(w_bits=16, a_bits=16, acc_bits=24)
    with pytest.raises(ValueError, match=r"QuantConfig\.acc_bits \+ mult_bits must be <= 62: "
                                         r"w_bits \+ a_bits = 32 needs acc_bits >= 32, so "
                                         r"mult_bits must be <= 30, not 31"):
        QuantConfig(w_bits=16, a_bits=16, acc_bits=32, mult_bits=31)
    with pytest.raises(ValueError, match="bias_correction"):
        QuantConfig(rounding="adaround", bias_correction="empirical")

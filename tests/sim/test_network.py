"""sim.network: IntLayer / IntNetwork validation and the .npz + JSON manifest round trip."""

import json
import zipfile

import numpy as np
import pytest
from qaccel.sim.network import FORMAT_VERSION, IntLayer, IntNetwork, QParams


def _q(scale=0.05, zp=10, bits=8, signed=False):
    return QParams(scale, zp, bits, signed)


def small_net(per_channel=True, rng=None):
    rng = rng or np.random.default_rng(0)
    qin, q1, q2, q3 = _q(0.02, 3), _q(0.04, 0), _q(0.03, 7), _q(0.1, 120)
    n = 4
    conv = IntLayer("conv", "conv2d", (-1,), (qin,), q1, relu=True,
                    weight=rng.integers(-8, 8, size=(n, 2, 3, 3)),
                    bias=rng.integers(-500, 500, size=n),
                    m=rng.integers(1 << 14, 1 << 15, size=n if per_channel else 1),
                    s=np.full(n if per_channel else 1, 22), w_bits=4,
                    per_channel=per_channel, stride=1, padding=1)
    dw = IntLayer("dw", "conv2d", (0,), (q1,), q2, weight=rng.integers(-8, 8, size=(n, 1, 3, 3)),
                  bias=rng.integers(-50, 50, size=n), m=np.full(n if per_channel else 1, 20000),
                  s=np.full(n if per_channel else 1, 21), w_bits=4, per_channel=per_channel,
                  stride=2, padding=1, groups=n)
    pool = IntLayer("gap", "global_avgpool", (1,), (q2,), q2, m=np.array([16384]),
                    s=np.array([16]), keepdim=False)
    fc = IntLayer("fc", "linear", (2,), (q2,), q3, weight=rng.integers(-8, 8, size=(3, n)),
                  bias=rng.integers(-100, 100, size=3), m=np.array([30000]), s=np.array([22]),
                  w_bits=4)
    return IntNetwork((conv, dw, pool, fc), qin, (2, 6, 6), acc_bits=32, mult_bits=16,
                      meta={"origin": "test"})


def test_save_load_round_trip(tmp_path):
    net = small_net()
    path = net.save(tmp_path / "net")
    assert path.suffix == ".npz" and path.exists()
    back = IntNetwork.load(path)
    assert back.manifest() == net.manifest()
    for a, b in zip(net.layers, back.layers):
        for name in ("weight", "bias", "m", "s"):
            va, vb = getattr(a, name), getattr(b, name)
            assert (va is None and vb is None) or np.array_equal(va, vb)
    assert back.meta == {"origin": "test"}
    # no pickled objects anywhere in the archive
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def _rewrite(path, out, mutate_manifest=None, drop=None):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    man = json.loads(arrays["manifest.json"].tobytes().decode())
    if mutate_manifest:
        mutate_manifest(man)
        arrays["manifest.json"] = np.frombuffer(json.dumps(man).encode(), dtype=np.uint8)
    if drop:
        arrays.pop(drop)
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.update(format_version=FORMAT_VERSION + 1), "format_version"),
    (lambda m: m.pop("acc_bits"), "'acc_bits': missing"),
    (lambda m: m["layers"][1].update(kind="conv3d"), r"layers\[1\].kind"),
    (lambda m: m["layers"][0].pop("stride"), r"layers\[0\].stride"),
    (lambda m: m["layers"][3]["out_q"].update(zero_point=999), r"layers\[3\]"),
    (lambda m: m["layers"][2].update(inputs=[3]), r"layers\[2\]"),
    (lambda m: m.update(format="other"), "'format'"),
])
def test_malformed_manifest_names_file_and_field(tmp_path, mutate, match):
    good = small_net().save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", mutate)
    with pytest.raises(ValueError, match=match) as exc:
        IntNetwork.load(bad)
    assert "bad.npz" in str(exc.value)


def test_missing_array_and_not_json(tmp_path):
    good = small_net().save(tmp_path / "good.npz")
    with pytest.raises(ValueError, match=r"L0.weight.*missing"):
        IntNetwork.load(_rewrite(good, tmp_path / "a.npz", drop="L0.weight"))
    np.savez(tmp_path / "b.npz", **{"manifest.json": np.frombuffer(b"{nope", dtype=np.uint8)})
    with pytest.raises(ValueError, match="not valid JSON"):
        IntNetwork.load(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing 'manifest.json'"):
        IntNetwork.load(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable"):
        IntNetwork.load(tmp_path / "d.npz")
    assert zipfile.is_zipfile(good)


def _member_data_span(path, name):
    """Byte range of member ``name``'s compressed data inside the zip ``path``."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    raw = path.read_bytes()
    start = info.header_offset + 30 + int.from_bytes(raw[info.header_offset + 26:
                                                         info.header_offset + 28], "little") \
        + int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return start, start + info.compress_size


def test_damaged_member_names_file_and_member(tmp_path):
    """A damaged deflate stream (zlib.error before) or CRC is a ValueError naming both."""
    good = small_net().save(tmp_path / "good.npz")
    start, end = _member_data_span(good, "L0.weight.npy")
    assert end - start > 8
    raw = bytearray(good.read_bytes())
    raw[start + 2:end - 2] = bytes(0xFF ^ b for b in raw[start + 2:end - 2])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad\.npz: member 'L0\.weight' is damaged") as exc:
        IntNetwork.load(bad)
    assert "error" in str(exc.value).lower()


def test_every_single_byte_damage_is_an_error_or_harmless(tmp_path):
    """Flip bytes of a saved network, one at a time (every 11th byte, and each member's
    flag and compression-method bytes): load gives the same network (the byte was not
    checked, e.g. a timestamp) or a ValueError naming the file, never another exception."""
    net = small_net()
    good = net.save(tmp_path / "good.npz")
    raw = good.read_bytes()
    with zipfile.ZipFile(good) as zf:
        headers = [info.header_offset for info in zf.infolist()]
    offsets = sorted(set(range(0, len(raw), 11)) | {h + k for h in headers for k in (6, 8)})
    bad = tmp_path / "flip.npz"
    errors = 0
    for i in offsets:
        bad.write_bytes(raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:])
        try:
            back = IntNetwork.load(bad)
        except ValueError as exc:
            assert "flip.npz" in str(exc), str(exc)
            errors += 1
            continue
        assert back.manifest() == net.manifest()
        for a, b in zip(net.layers, back.layers):
            for name in ("weight", "bias", "m", "s"):
                va, vb = getattr(a, name), getattr(b, name)
                assert (va is None and vb is None) or np.array_equal(va, vb), (i, name)
    assert errors > len(offsets) // 2


def test_other_files_are_refused_naming_the_file(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    with pytest.raises(ValueError, match=r"one\.npz: not an \.npz archive"):
        IntNetwork.load(tmp_path / "one.npz")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(ValueError, match=r"dir\.npz: not a readable \.npz file"):
        IntNetwork.load(tmp_path / "dir.npz")
    good = small_net().save(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz"):
        IntNetwork.load(tmp_path / "cut.npz")
    bad = _rewrite(good, tmp_path / "arr.npz", lambda m: m["layers"][0].update(arrays=5))
    with pytest.raises(ValueError, match=r"arr\.npz: manifest field 'layers\[0\]\.arrays'"):
        IntNetwork.load(bad)


def test_pickled_arrays_are_refused(tmp_path):
    good = small_net().save(tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["L0.weight"] = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(ValueError):
        IntNetwork.load(tmp_path / "p.npz")


def test_layer_validation_messages():
    q = _q()
    with pytest.raises(ValueError, match="kind must be one of"):
        IntLayer("x", "sigmoid", (-1,), (q,), q)
    with pytest.raises(ValueError, match=r"IntLayer\('x'\)\.weight must be in \[-8, 7\] "
                                         r"\(signed 4-bit weights\), not 8"):
        IntLayer("x", "linear", (-1,), (q,), q, weight=np.full((2, 3), 8), bias=np.zeros(2, int),
                 m=np.ones(1, int), s=np.ones(1, int), w_bits=4)
    with pytest.raises(ValueError, match=r"IntLayer\('x'\)\.m must be of shape \(2,\) "
                                         r"\(per-channel\), not \(1,\)"):
        IntLayer("x", "linear", (-1,), (q,), q, weight=np.ones((2, 3), int),
                 bias=np.zeros(2, int), m=np.ones(1, int), s=np.ones(1, int),
                 per_channel=True)
    with pytest.raises(ValueError, match=r"IntLayer\('x'\)\.weight must be an integer array, "
                                         r"not dtype float64"):
        IntLayer("x", "linear", (-1,), (q,), q, weight=np.ones((2, 3)), bias=np.zeros(2, int),
                 m=np.ones(1, int), s=np.ones(1, int))
    with pytest.raises(ValueError, match=r"IntLayer\('x'\)\.out_q must be in_q\[0\] \(a maxpool2d "
                                         r"keeps the input's quantization\)"):
        IntLayer("x", "maxpool2d", (-1,), (q,), _q(0.1), kernel=2, stride=2)
    with pytest.raises(ValueError, match=r"IntLayer\('x'\)\.groups must be a divisor of "
                                         r"C_out = 4, not 3"):
        IntLayer("x", "conv2d", (-1,), (q,), q, weight=np.ones((4, 1, 3, 3), int),
                 bias=np.zeros(4, int), m=np.ones(1, int), s=np.ones(1, int), groups=3)
    with pytest.raises(ValueError, match=r"QParams\.zero_point must be 0 \(signed tensors are "
                                         r"symmetric\), not 3"):
        QParams(0.1, 3, 8, True)
    with pytest.raises(ValueError, match=r"QParams\.scale must be a finite number > 0, not 0\.0"):
        QParams(0.0, 0, 8, False)


def test_network_validation_messages():
    net = small_net()
    with pytest.raises(ValueError, match=r"IntNetwork\.layers\[0\]\.in_q\[0\] must be the "
                                         r"quantization QParams\(scale=0\.5, .* of its input -1"):
        IntNetwork(net.layers, _q(0.5, 3), net.input_shape)
    with pytest.raises(ValueError, match=r"IntNetwork\.layers\[0\]\.m must be in \[0, 255\] "
                                         r"\('conv': mult_bits = 8\), not \d+"):
        IntNetwork(net.layers, net.input_q, net.input_shape, acc_bits=32, mult_bits=8)
    with pytest.raises(ValueError, match=r"IntNetwork\.layers\[0\]\.bias must be in "
                                         r"\[-128, 127\] \('conv': 8-bit accumulator\)"):
        IntNetwork(net.layers, net.input_q, net.input_shape, acc_bits=8)
    with pytest.raises(ValueError, match=r"IntNetwork\.acc_bits must be in \[4, 46\] "
                                         r"\(acc_bits \+ mult_bits <= 62 with mult_bits = 16\), "
                                         r"not 50"):
        IntNetwork(net.layers, net.input_q, net.input_shape, acc_bits=50, mult_bits=16)


def test_sim_network_and_executor_need_only_numpy():
    import subprocess
    import sys

    code = ("import sys, qaccel.sim.network, qaccel.sim.executor; "
            "bad = [m for m in ('torch', 'amaranth', 'qaccel.quant', 'qaccel.hw') "
            "if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _token_net():
    """Token ids + mask -> word + position tables -> add -> masked mean (format 3)."""
    from qaccel.sim.network import IDS_Q, MASK_Q, NetInput
    rng = np.random.default_rng(1)
    qe, qp, qa = _q(0.1, 120), _q(0.05, 128), _q(0.12, 118)
    word = IntLayer("word", "embedding", (-1,), (IDS_Q,), qe,
                    table=rng.integers(0, 256, size=(30, 4)))
    pos = IntLayer("pos", "position_embedding", (-2,), (MASK_Q,), qp,
                   table=rng.integers(0, 256, size=(16, 4)))
    add = IntLayer("add", "add", (0, 1), (qe, qp), qa, m=np.array([27307, 13653]),
                   s=np.array([15]))
    mean = IntLayer("mean", "mean", (2, -2), (qa, MASK_Q), qa, m=np.array([1 << 14]),
                    s=np.array([14]), axis=1)
    inputs = (NetInput("input_ids", "ids", (-1,), IDS_Q),
              NetInput("attention_mask", "mask", (-1,), MASK_Q))
    return IntNetwork((word, pos, add, mean), inputs=inputs)


def test_token_network_round_trip_and_format_versions(tmp_path):
    """Format 3 keeps the inputs (kinds, variable length) and the new kinds; a format-2
    file (one activation input, optional mask) still loads as such."""
    net = _token_net()
    back = IntNetwork.load(net.save(tmp_path / "tok"))
    assert back.inputs == net.inputs and back.mask_shape == (-1,)
    for a, b in zip(net.layers, back.layers):
        assert (a.kind, a.inputs, a.axis) == (b.kind, b.inputs, b.axis)
        assert (a.table is None and b.table is None) or np.array_equal(a.table, b.table)
    old = small_net()
    path = old.save(tmp_path / "v2")
    man = old.manifest()
    man["format_version"] = 2
    del man["inputs"]
    man.update(input_q=old.input_q.to_dict(), input_shape=list(old.input_shape),
               mask_shape=None)
    _rewrite(path, tmp_path / "v2b.npz", lambda m: (m.clear(), m.update(man)))
    v2 = IntNetwork.load(tmp_path / "v2b.npz")
    assert [v.kind for v in v2.inputs] == ["act"] and v2.input_shape == (2, 6, 6)
    with pytest.raises(ValueError, match="format_version.*unsupported version 4"):
        _rewrite(path, tmp_path / "v4.npz", lambda m: m.update(format_version=4))
        IntNetwork.load(tmp_path / "v4.npz")


def test_token_network_validation_messages():
    from qaccel.sim.network import IDS_Q, MASK_Q, NetInput
    net = _token_net()
    with pytest.raises(ValueError, match="NetInput\\('x'\\).kind must be one of"):
        NetInput("x", "tokens", (-1,), IDS_Q)
    with pytest.raises(ValueError, match="NetInput\\('m'\\).q must be"):
        NetInput("m", "mask", (-1,), IDS_Q)
    with pytest.raises(ValueError, match="token ids as the input of an embedding"):
        IntNetwork((IntLayer("r", "relu", (-1,), (IDS_Q,), IDS_Q),), inputs=net.inputs)
    with pytest.raises(ValueError, match="a mask input only as the second input"):
        IntNetwork(net.layers[:2] + (IntLayer("r", "relu", (-2,), (MASK_Q,), MASK_Q),),
                   inputs=net.inputs)
    with pytest.raises(ValueError, match="input_q must be None or .* \\(derived from inputs"):
        IntNetwork(net.layers, _q(), inputs=net.inputs)
    # dataclasses.replace passes the derived fields back: equal ones are accepted
    import dataclasses
    again = dataclasses.replace(net, meta={"seq_len": 7})
    assert again.inputs == net.inputs and again.input_q == net.input_q
    assert again.meta == {"seq_len": 7}
    with pytest.raises(ValueError, match="table must be in \\[0, 255\\]"):
        IntLayer("e", "embedding", (-1,), (IDS_Q,), _q(), table=np.full((3, 2), 300))
    with pytest.raises(ValueError, match="at most one -1"):
        IntLayer("r", "reshape", (0,), (_q(),), _q(), shape=(-1, -1))

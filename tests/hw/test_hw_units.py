"""Amaranth-simulator unit tests of the RTL components against pure-Python references."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator
from qaccel.hw.accumulator import AccumulatorBank
from qaccel.hw.array import SystolicArray
from qaccel.hw.controller import Sequencer
from qaccel.hw.params_fifo import ParamsFifo
from qaccel.hw.pe import ProcessingElement
from qaccel.hw.requant import Requantizer
from qaccel.sim.arith import int_range, output_bounds, requantize, wrap
from qaccel.sim.config import ArrayConfig
from qaccel.sim.schedule import pass_starts, tiling


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def _raw(port):
    """The underlying signal of a port (views have one; plain signals are one)."""
    return port.as_value() if hasattr(port, "as_value") else port


def _wrap1(v: int, bits: int) -> int:
    return int(wrap(np.int64(v), bits))


# ---- processing element ---------------------------------------------------------------------

@pytest.mark.parametrize("w_bits,a_bits,a_signed,acc_bits", [
    (8, 8, False, 16),      # acc = w + a: products and sums wrap
    (2, 4, False, 6),
    (16, 16, True, 32),
    (4, 8, True, 40),
])
def test_pe_matches_register_model(w_bits, a_bits, a_signed, acc_bits):
    dut = ProcessingElement(w_bits=w_bits, a_bits=a_bits, a_signed=a_signed, acc_bits=acc_bits)
    rng = np.random.default_rng(w_bits * 100 + a_bits)
    alo, ahi = int_range(a_bits, a_signed)
    wlo, whi = int_range(w_bits, True)
    clo, chi = int_range(acc_bits, True)
    seen_wrap = []

    def pick(lo, hi):
        return int(rng.choice([lo, hi, int(rng.integers(lo, hi, endpoint=True))]))

    async def tb(ctx):
        a = swap = psum = w_active = w_shadow = 0
        for _ in range(300):
            en = bool(rng.random() < 0.8)
            ins = dict(a_in=pick(alo, ahi), swap_in=int(rng.random() < 0.3),
                       psum_in=pick(clo, chi), w_in=pick(wlo, whi),
                       w_load=int(rng.random() < 0.4))
            ctx.set(dut.en, en)
            for k, v in ins.items():
                ctx.set(getattr(dut, k), v)
            assert ctx.get(dut.a_out) == a
            assert ctx.get(dut.swap_out) == swap
            assert ctx.get(dut.psum_out) == psum
            await ctx.tick()
            if en:
                w_eff = w_shadow if swap else w_active
                exact = ins["psum_in"] + a * w_eff
                psum = _wrap1(exact, acc_bits)
                seen_wrap.append(psum != exact)
                if swap:
                    w_active = w_shadow
                if ins["w_load"]:
                    w_shadow = ins["w_in"]
                a, swap = ins["a_in"], ins["swap_in"]

    _run(dut, tb)
    assert any(seen_wrap)


# ---- systolic array -------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,w_bits,a_bits,a_signed,acc_bits", [
    (3, 5, 2, 4, False, 6),
    (4, 2, 8, 8, True, 16),
])
def test_array_skew_double_buffer_and_freeze(rows, cols, w_bits, a_bits, a_signed, acc_bits):
    """Two weight sets; the second loads while the first computes; random freezes.
    The column sums of the vector presented in enabled cycle τ appear in enabled cycle
    τ + rows + cols."""
    dut = SystolicArray(rows=rows, cols=cols, w_bits=w_bits, a_bits=a_bits, a_signed=a_signed,
                        acc_bits=acc_bits)
    rng = np.random.default_rng(rows * cols)
    alo, ahi = int_range(a_bits, a_signed)
    wlo, whi = int_range(w_bits, True)
    n = max(rows, cols) + 2                       # vectors per weight set
    W = [rng.integers(wlo, whi, endpoint=True, size=(rows, cols)) for _ in range(2)]
    X = [rng.choice([alo, ahi, (alo + ahi) // 2], size=(n, rows)) for _ in range(2)]
    t0 = rows                                     # first vector after loading W0
    t1 = t0 + n                                   # second set follows back to back
    loads = {r: (r, W[0][r]) for r in range(rows)}
    loads.update({t0 + cols + r: (r, W[1][r]) for r in range(rows)})
    vecs = {t0 + i: (X[0][i], i == 0) for i in range(n)}
    vecs.update({t1 + i: (X[1][i], i == 0) for i in range(n)})
    expect = {}
    for s, base in ((0, t0), (1, t1)):
        sums = wrap(X[s] @ W[s], acc_bits)
        for i in range(n):
            expect[base + i + rows + cols] = sums[i]
    last = max(expect)
    got = {}

    async def tb(ctx):
        k = 0                                     # enabled-cycle index
        while k <= last:
            en = bool(rng.random() < 0.75)
            ctx.set(dut.en, en)
            if k in loads and en:
                row, wv = loads[k]
                ctx.set(dut.w_load, 1 << row)
                ctx.set(dut.w_in.as_value(), sum((int(v) & ((1 << w_bits) - 1)) << (c * w_bits)
                                                 for c, v in enumerate(wv)))
            else:
                ctx.set(dut.w_load, 0)
                ctx.set(dut.w_in.as_value(), int(rng.integers(0, 1 << (w_bits * cols))))
            if k in vecs:
                x, swap = vecs[k]
                word = sum((int(v) & ((1 << a_bits) - 1)) << (r * a_bits) for r, v in enumerate(x))
                ctx.set(dut.a_in.as_value(), word)
                ctx.set(dut.swap_in, int(swap))
            else:
                ctx.set(dut.a_in.as_value(), 0)
                ctx.set(dut.swap_in, 0)
            if k in expect:
                got[k] = [ctx.get(dut.psum_out[c]) for c in range(cols)]
            await ctx.tick()
            k += en

    _run(dut, tb)
    for k, v in expect.items():
        assert got[k] == [int(e) for e in v], f"enabled cycle {k}"


# ---- accumulator bank -----------------------------------------------------------------------

def _run_bank_with_random_enables(dut, tokens, rng, *, cols: int, depth: int,
                                  lanes=("psum", "bias"), load: int | None = None) -> list:
    """Drive ``tokens`` (dicts of ``valid, first, last, addr`` and the ``lanes`` vectors)
    into an ``AccumulatorBank`` with ``en`` high in ~70 % of the cycles: a token advances
    only in an enabled cycle, ``rd_addr`` follows the prefetch contract (the next token's
    address in an enabled cycle, garbage in a frozen one, where the read port holds).
    ``load`` (if given) is held for the whole run. Returns the ``sum`` vectors of the
    enabled cycles with ``sum_valid``."""
    got = []

    async def tb(ctx):
        if load is not None:
            ctx.set(dut.load, load)
        ctx.set(dut.en, 1)
        ctx.set(dut.rd_addr, tokens[0]["addr"])
        await ctx.tick()
        i = 0
        while i < len(tokens):
            en = bool(rng.random() < 0.7)
            tk = tokens[i]
            ctx.set(dut.en, en)
            nxt = tokens[i + 1]["addr"] if i + 1 < len(tokens) else 0
            ctx.set(dut.rd_addr, nxt if en else int(rng.integers(0, depth)))
            for k in ("valid", "first", "last", "addr"):
                ctx.set(getattr(dut, k), tk[k])
            for c in range(cols):
                for k in lanes:
                    ctx.set(getattr(dut, k)[c], int(tk[k][c]))
            if en and ctx.get(dut.sum_valid):
                got.append([ctx.get(dut.sum[c]) for c in range(cols)])
            await ctx.tick()
            i += en

    _run(dut, tb)
    return got


def test_accumulator_bias_accumulate_wrap_and_freeze():
    cols, acc_bits, depth = 3, 8, 5
    dut = AccumulatorBank(cols=cols, acc_bits=acc_bits, depth=depth)
    rng = np.random.default_rng(7)
    lo, hi = int_range(acc_bits, True)
    L, KT, gap = 4, 3, 2
    # token stream in enabled cycles: KT passes over entries 0..L-1, invalid gaps between
    tokens = []
    for tile in range(2):
        bias = rng.integers(lo, hi, endpoint=True, size=cols)
        for kt in range(KT):
            for t in range(L):
                psum = rng.choice([lo, hi, 0, 1], size=cols)
                tokens.append(dict(valid=1, first=int(kt == 0), last=int(kt == KT - 1),
                                   addr=t + tile, psum=psum, bias=bias))
            tokens += [dict(valid=0, first=0, last=0, addr=int(rng.integers(0, depth)),
                            psum=rng.integers(lo, hi, size=cols), bias=bias)] * gap
    expect, exact = [], []
    for tile in range(2):
        seg = [tk for tk in tokens if tk["valid"]][tile * KT * L:(tile + 1) * KT * L]
        for t in range(L):
            vals = [tk for tk in seg if tk["addr"] == t + tile]
            total = vals[0]["bias"] + sum(tk["psum"] for tk in vals)
            exact.append(total)
            expect.append([int(v) for v in wrap(total, acc_bits)])
    assert np.any(np.array(exact) != np.array(expect))      # the test does exercise wrap

    got = _run_bank_with_random_enables(dut, tokens, rng, cols=cols, depth=depth)
    assert got == expect
    sums = np.array(expect)
    assert sums.min() >= lo and sums.max() <= hi


def test_accumulator_keep_stores_final_sums_for_the_next_job():
    """K-split: with ``keep`` the final (``last``) sum is written back as well as sent; a
    later vector with ``first`` low resumes from it instead of the bias."""
    cols, depth = 2, 4
    dut = AccumulatorBank(cols=cols, acc_bits=12, depth=depth)
    # (valid, first, last, keep, addr, psum, bias): job 1 stores entries 1, 2; job 2 resumes
    tokens = [(1, 1, 1, 1, 1, [5, -7], [100, 200]), (1, 1, 1, 1, 2, [1, 2], [100, 200]),
              (0, 0, 0, 0, 3, [9, 9], [0, 0]), (1, 0, 1, 0, 2, [10, 20], [-999, -999]),
              (1, 0, 1, 0, 1, [3, 4], [-999, -999]), (1, 0, 1, 0, 1, [3, 4], [-999, -999])]
    got = []

    async def tb(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.rd_addr, tokens[0][4])
        await ctx.tick()
        for i, (valid, first, last, keep, addr, psum, bias) in enumerate(tokens):
            ctx.set(dut.rd_addr, tokens[i + 1][4] if i + 1 < len(tokens) else 0)
            for k, v in (("valid", valid), ("first", first), ("last", last), ("keep", keep),
                         ("addr", addr)):
                ctx.set(getattr(dut, k), v)
            for c in range(cols):
                ctx.set(dut.psum[c], psum[c])
                ctx.set(dut.bias[c], bias[c])
            if ctx.get(dut.sum_valid):
                got.append([ctx.get(dut.sum[c]) for c in range(cols)])
            await ctx.tick()

    _run(dut, tb)
    # entry 1 = 105, 193 after job 1; without keep the last token's sum is not stored, so
    # the two identical last tokens both give 105 + 3, 193 + 4
    assert got == [[105, 193], [101, 202], [111, 222], [108, 197], [108, 197]]


def test_accumulator_load_starts_first_pass_from_start_not_bias():
    """Partial-sum spill: with ``load`` the first K pass starts from ``start`` (one vector
    per output, as the ``psum_in`` beats arrive), later passes from the bank, ``bias``
    ignored; without ``load`` the same tokens start from ``bias``. Random enables freeze
    everything (against a pure-Python model of the bank)."""
    cols, acc_bits, depth, L, KT = 3, 10, 4, 3, 3
    lo, hi = int_range(acc_bits, True)
    for load in (1, 0):
        dut = AccumulatorBank(cols=cols, acc_bits=acc_bits, depth=depth)
        rng = np.random.default_rng(31 + load)
        tokens = []
        for _tile in range(2):
            bias = rng.integers(lo, hi, endpoint=True, size=cols)
            starts = rng.integers(lo, hi, endpoint=True, size=(L, cols))
            for kt in range(KT):
                for t in range(L):
                    tokens.append(dict(valid=1, first=int(kt == 0), last=int(kt == KT - 1),
                                       addr=t, psum=rng.integers(lo, hi, endpoint=True,
                                                                 size=cols),
                                       bias=bias, start=starts[t] if kt == 0 else
                                       rng.integers(lo, hi, endpoint=True, size=cols)))
                tokens.append(dict(valid=0, first=1, last=1, addr=0, psum=bias, bias=bias,
                                   start=bias))
        bank = {}
        expect = []
        for tk in tokens:
            if not tk["valid"]:
                continue
            base = ((tk["start"] if load else tk["bias"]) if tk["first"]
                    else bank[tk["addr"]])
            total = wrap(base + tk["psum"], acc_bits)
            if tk["last"]:
                expect.append([int(v) for v in total])
            else:
                bank[tk["addr"]] = total
        got = _run_bank_with_random_enables(dut, tokens, rng, cols=cols, depth=depth,
                                            lanes=("psum", "bias", "start"), load=load)
        assert got == expect
        assert len(expect) == 2 * L


# ---- requantizer ----------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel,a_bits,a_signed,acc_bits,mult_bits", [
    (False, 8, False, 32, 16),
    (True, 8, True, 32, 16),
    (True, 4, False, 30, 32),     # acc_bits + mult_bits = 62: widest product
    (False, 16, True, 46, 16),
    (True, 2, True, 8, 1),
])
def test_requantizer_matches_spec(per_channel, a_bits, a_signed, acc_bits, mult_bits):
    lanes = 3
    dut = Requantizer(lanes=lanes, acc_bits=acc_bits, mult_bits=mult_bits, a_bits=a_bits,
                      a_signed=a_signed, per_channel=per_channel)
    rng = np.random.default_rng(acc_bits + mult_bits + a_bits)
    clo, chi = int_range(acc_bits, True)
    mhi = (1 << mult_bits) - 1
    tmin, tmax = int_range(a_bits, a_signed)
    n_m = lanes if per_channel else 1

    def draw():
        acc = rng.choice([clo, chi, 0, -1, 1, int(rng.integers(clo, chi))], size=lanes)
        acc = np.where(rng.random(lanes) < 0.5, rng.integers(clo, chi, size=lanes), acc)
        m = rng.choice([0, mhi, int(rng.integers(0, mhi, endpoint=True))], size=n_m)
        s = rng.choice([0, 1, 63, int(rng.integers(0, 64)),
                        int(np.clip(acc_bits + mult_bits - a_bits - 1, 0, 63))], size=n_m)
        return acc.astype(np.int64), m.astype(np.int64), s.astype(np.int64)

    def pack(v, bits):
        return sum((int(x) & ((1 << bits) - 1)) << (i * bits) for i, x in enumerate(v))

    clamps = {"lo": 0, "hi": 0, "mid": 0}

    async def tb(ctx):
        for job in range(4):
            z_y = int(rng.integers(tmin, tmax, endpoint=True))
            relu = bool(job % 2)
            lo, hi = output_bounds(a_bits, a_signed, z_y, relu)
            ctx.set(dut.z_y, z_y)
            ctx.set(dut.relu, relu)
            pipe = deque([None, None])            # what the output shows after each edge
            for _ in range(60):
                en = bool(rng.random() < 0.75)
                acc, m, s = draw()
                n_real = int(rng.integers(0, lanes + 1))
                valid = bool(rng.random() < 0.8)
                ctx.set(dut.en, en)
                ctx.set(dut.i_valid, valid)
                ctx.set(dut.i_acc.as_value(), pack(acc, acc_bits))
                ctx.set(_raw(dut.i_m), pack(m, mult_bits))
                ctx.set(_raw(dut.i_s), pack(s, 6))
                ctx.set(dut.i_lanes, n_real)
                ctx.set(dut.i_last, int(n_real == 1))
                shown = pipe[0]
                if shown is None:
                    assert not ctx.get(dut.o_valid)
                else:
                    y_exp = requantize(shown[0], shown[1], shown[2], z_y, lo, hi)
                    y_exp[shown[3]:] = 0
                    for v in y_exp[:shown[3]]:
                        clamps["lo" if v == lo else "hi" if v == hi else "mid"] += 1
                    assert ctx.get(dut.o_valid)
                    assert ctx.get(dut.o_last) == int(shown[3] == 1)
                    assert [ctx.get(dut.o_y[c]) for c in range(lanes)] == y_exp.tolist()
                await ctx.tick()
                if en:
                    pipe.popleft()
                    pipe.append((acc, m, s, n_real) if valid else None)
            ctx.set(dut.i_valid, 0)
            ctx.set(dut.en, 1)
            await ctx.tick().repeat(2)

    _run(dut, tb)
    assert clamps["lo"] and clamps["hi"]


# ---- parameter FIFO -------------------------------------------------------------------------

def test_params_fifo_order_level_and_overflow():
    """Order and level against a deque until a push finds the FIFO full; from the next cycle
    on the sticky ``overflow`` flag must read 1 (and 0 on every cycle before)."""
    depth = 3
    dut = ParamsFifo(20, depth=depth)
    rng = np.random.default_rng(3)
    steps = 400
    seen = {"overflow_at": None, "overflow_cycles": 0}

    async def tb(ctx):
        model = deque()
        for i in range(steps):
            en = bool(rng.random() < 0.8)
            push = bool(rng.random() < 0.5)
            pop = bool(model) and bool(rng.random() < 0.45)
            word = int(rng.integers(0, 1 << 20))
            ctx.set(dut.en, en)
            ctx.set(dut.w_en, push)
            ctx.set(dut.w_data, word)
            ctx.set(dut.r_en, pop)
            overflowed = seen["overflow_at"] is not None
            if not overflowed:          # contents and level after an overflow are unspecified
                assert ctx.get(dut.level) == len(model)
                if model:
                    assert ctx.get(dut.r_data) == model[0]
            assert ctx.get(dut.overflow) == int(overflowed), f"cycle {i}"
            seen["overflow_cycles"] += int(ctx.get(dut.overflow))
            await ctx.tick()
            if en and not overflowed:
                if push and len(model) == depth and not pop:
                    seen["overflow_at"] = i
                if pop:
                    model.popleft()
                if push and len(model) < depth:
                    model.append(word)

    _run(dut, tb)
    # the stimulus really overflowed the FIFO, and the flag was observed set (and stayed set)
    assert seen["overflow_at"] is not None, "the stimulus never overflowed the FIFO"
    assert seen["overflow_cycles"] == steps - 1 - seen["overflow_at"] > 0


# ---- sequencer ------------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,depth,T,K,N,chain", [
    (4, 4, 8, 11, 9, 10, False),    # partial T-, K- and N-tiles, several of each
    (3, 5, 4, 2, 7, 11, False),     # L < max(rows, cols): padded periods
    (2, 2, 1, 3, 5, 3, False),
    (5, 2, 3, 7, 5, 2, False),
    (3, 2, 12, 4, 7, 5, True),      # chained: entries nt * T + t, all NT * T = 12 of them
    (2, 3, 9, 2, 3, 7, True),
])
def test_sequencer_follows_pass_schedule(rows, cols, depth, T, K, N, chain):
    cfg = ArrayConfig(rows=rows, cols=cols, acc_depth=depth)
    til = tiling(cfg, T, K, N)
    starts = pass_starts(cfg, til)
    coords = til.pass_coords()
    exp_act, exp_w, exp_p, exp_end = {}, {}, set(), set()
    for p, (nt, tt, kt) in enumerate(coords):
        s, L = int(starts[p]), til.tile_len(tt)
        for t in range(L):
            exp_act[s + t] = dict(t_idx=nt * T + t if chain else t, swap=int(t == 0),
                                  first_k=int(kt == 0),
                                  last_k=int(kt == til.KT - 1), n_rem=til.n_len(nt),
                                  k_rem=til.k_len(kt))
        exp_w.update({s + r: r for r in range(rows)})
        if kt == 0 and tt == 0:
            exp_p.add(s)
        if kt == til.KT - 1 and tt == til.TT - 1:
            exp_end.add(s + L - 1)
    job_end = max(exp_end)
    dut = Sequencer(rows=rows, cols=cols, depth=depth, dim_bits=cfg.dim_bits)
    rng = np.random.default_rng(T * K * N)

    async def tb(ctx):
        ctx.set(dut.T, T)
        ctx.set(dut.K, K)
        ctx.set(dut.N, N)
        ctx.set(dut.chain, chain)
        ctx.set(dut.start, 1)
        ctx.set(dut.en, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle = 1
        act, w, par, ends = {}, {}, set(), set()
        while ctx.get(dut.running):
            en = bool(rng.random() < 0.7)
            ctx.set(dut.en, en)
            if en:
                tok = dut.token
                if ctx.get(dut.need_act):
                    mask = ctx.get(dut.act_mask)
                    act[cycle] = dict(t_idx=ctx.get(tok.t_idx), swap=ctx.get(tok.swap),
                                      first_k=ctx.get(tok.first_k), last_k=ctx.get(tok.last_k),
                                      n_rem=ctx.get(tok.n_rem),
                                      k_rem=bin(mask).count("1"))
                    assert mask == (1 << act[cycle]["k_rem"]) - 1
                    assert ctx.get(tok.valid)
                else:
                    assert not ctx.get(tok.valid)
                if ctx.get(dut.need_weight):
                    w_load = ctx.get(dut.w_load)
                    assert w_load and w_load & (w_load - 1) == 0      # one-hot
                    w[cycle] = w_load.bit_length() - 1
                else:
                    assert ctx.get(dut.w_load) == 0
                if ctx.get(dut.need_params):
                    par.add(cycle)
                if ctx.get(tok.group_end):
                    ends.add(cycle)
                    assert ctx.get(tok.job_last) == int(cycle == job_end)
            await ctx.tick()
            cycle += en
            assert cycle < 10 * (T * K * N + 100)
        assert act == exp_act
        assert w == exp_w
        assert par == exp_p
        assert ends == exp_end

    _run(dut, tb)


# ---- constructor argument checks ------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda: ProcessingElement(w_bits=1, a_bits=8, a_signed=False, acc_bits=32),
     "ProcessingElement.w_bits must be in [2, 16], not 1"),
    (lambda: ProcessingElement(w_bits=8, a_bits=17, a_signed=False, acc_bits=32),
     "ProcessingElement.a_bits must be in [2, 16], not 17"),
    (lambda: ProcessingElement(w_bits=8, a_bits=8, a_signed=1, acc_bits=32),
     "ProcessingElement.a_signed must be a bool, not 1"),
    (lambda: ProcessingElement(w_bits=8, a_bits=8, a_signed=False, acc_bits=15),
     "ProcessingElement.acc_bits must be in [16, 60], not 15"),
    (lambda: SystolicArray(rows=1, cols=4, w_bits=8, a_bits=8, a_signed=False, acc_bits=32),
     "SystolicArray.rows must be in [2, 256], not 1"),
    (lambda: SystolicArray(rows=4, cols=257, w_bits=8, a_bits=8, a_signed=False, acc_bits=32),
     "SystolicArray.cols must be in [2, 256], not 257"),
    (lambda: AccumulatorBank(cols=4, acc_bits=32, depth=0),
     "AccumulatorBank.depth must be in [1, 65536], not 0"),
    (lambda: AccumulatorBank(cols=4, acc_bits=3, depth=8),
     "AccumulatorBank.acc_bits must be in [4, 60], not 3"),
    (lambda: Requantizer(lanes=4, acc_bits=32, mult_bits=31, a_bits=8, a_signed=False,
                         per_channel=False),
     "Requantizer.acc_bits + mult_bits must be <= 62, not 32 + 31 = 63"),
    (lambda: Requantizer(lanes=4, acc_bits=32, mult_bits=0, a_bits=8, a_signed=False,
                         per_channel=False),
     "Requantizer.mult_bits must be in [1, 32], not 0"),
    (lambda: Requantizer(lanes=4, acc_bits=32, mult_bits=16, a_bits=8, a_signed=False,
                         per_channel="yes"),
     "Requantizer.per_channel must be a bool, not 'yes'"),
    (lambda: ParamsFifo(8, depth=0), "ParamsFifo.depth must be in [1, 64], not 0"),
    (lambda: Sequencer(rows=4, cols=4, depth=8, dim_bits=25),
     "Sequencer.dim_bits must be in [4, 24], not 25"),
    (lambda: Sequencer(rows=4, cols=4, depth=8.0, dim_bits=16),
     "Sequencer.depth must be an integer in [1, 65536], not 8.0"),
])
def test_constructor_errors(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message

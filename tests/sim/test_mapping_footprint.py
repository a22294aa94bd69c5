"""Input footprints: a strided / dilated convolution counts only the pixels it samples,
slabs count their halos, padding is never fetched (hand-computed small cases)."""

import numpy as np
import pytest
from qaccel.sim.analytic import analyze_layer
from qaccel.sim.config import ArrayConfig
from qaccel.sim.topology import parse_topology
from qaccel.sim.workload import conv_workload


def test_strided_1x1_reads_a_quarter_of_its_input():
    w = conv_workload("ds", 8, 8, 4, 16, 1, stride=2)
    # rows 0,2,4,6 x cols 0,2,4,6 x 4 channels
    assert w.input_elems == 4 * 4 * 4
    assert w.geometry.rows_read(0, 4) == 4 and w.geometry.cols_read == 4


def test_padding_is_not_fetched_and_halos_are():
    w = conv_workload("c", 5, 5, 2, 3, 3, padding=1)
    g = w.geometry
    assert w.input_elems == 5 * 5 * 2                  # padding adds nothing
    # output row 0 reads input rows -1, 0, 1 -> rows 0, 1 (row -1 is padding)
    assert g.rows_read(0, 1) == 2
    # output rows 1..2 read input rows 0..3; the halo (rows 0, 3) is counted
    assert g.rows_read(1, 3) == 4
    assert g.slab_elems(1, 3) == 4 * 5 * 2
    # two slabs [0, 2) and [2, 5): rows 0..2 and 1..4, 3 + 4 = 7 rows > 5 (halo twice)
    assert g.slab_elems(0, 2) + g.slab_elems(2, 5) == 7 * 5 * 2


def test_dilated_and_strided_kernels_skip_rows():
    # kernel 3, dilation 2, stride 3, no padding, 11 rows: out = (11 - 4 - 1)//3 + 1 = 3
    w = conv_workload("d", 11, 11, 1, 1, 3, stride=3, dilation=2)
    g = w.geometry
    assert (g.out_h, g.out_w) == (3, 3)
    # output o reads rows 3o, 3o+2, 3o+4: {0,2,4,3,5,7,6,8,10} -> 9 rows of 11
    assert g.rows_read(0, 3) == 9 and g.cols_read == 9
    assert w.input_elems == 81
    # stride 4 kernel 2 dilation 1: rows 0,1,4,5 of 6 (taps of different outputs disjoint)
    assert conv_workload("e", 6, 6, 1, 1, 2, stride=4).input_elems == 4 * 4


def test_batch_slabs_split_at_image_borders():
    w = conv_workload("b", 4, 4, 3, 2, 3, padding=1, batch=2)
    g = w.geometry
    # global output rows 3..4 = last row of image 0 (input rows 2, 3) and first row of
    # image 1 (input rows 0, 1)
    assert g.slab_elems(3, 5) == (2 + 2) * 4 * 3
    assert w.input_elems == 2 * 4 * 4 * 3


def test_grouped_footprint_is_per_group():
    w = conv_workload("g", 6, 6, 8, 8, 1, stride=2, groups=4)
    assert w.repeat == 4 and w.input_elems == 3 * 3 * 2


def test_fixed_nest_charges_only_sampled_pixels():
    """The fixed nest's DRAM input traffic uses the footprint: a strided 1x1 whose whole
    map would not fit the activation buffer but whose sampled quarter does is read once."""
    cfg = ArrayConfig(rows=8, cols=8, acc_depth=64, act_buffer_kib=2)
    w = conv_workload("ds", 16, 16, 32, 64, 1, stride=2)   # map 8 KiB, sampled 2 KiB
    lp = analyze_layer(cfg, w)
    assert w.input_elems == 8 * 8 * 32
    assert not lp.acts_refetched
    assert lp.traffic["dram", "activations"].reads == 8 * 8 * 32 * 8


def test_topology_strided_layer_counts_sampled_pixels():
    text = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, " \
           "Num Filter, Strides,\nL0, 9, 9, 1, 1, 4, 8, 2,\n"
    (layer,) = parse_topology(text)
    w = layer.workload()
    assert w.input_elems == 5 * 5 * 4       # rows / cols 0, 2, 4, 6, 8


@pytest.mark.parametrize("k,s,p,d", [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1),
                                     (3, 1, 2, 2), (1, 2, 0, 1), (2, 3, 0, 1)])
def test_footprint_matches_brute_force(k, s, p, d):

    w = conv_workload("x", 13, 10, 2, 1, k, stride=s, padding=p, dilation=d)
    g = w.geometry
    read = np.zeros((13, 10), bool)
    for oh in range(g.out_h):
        for ow in range(g.out_w):
            for i in range(k):
                for j in range(k):
                    y, x = oh * s - p + i * d, ow * s - p + j * d
                    if 0 <= y < 13 and 0 <= x < 10:
                        read[y, x] = True
    assert w.input_elems == int(read.sum()) * 2

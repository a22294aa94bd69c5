"""Fixtures shared by the CLI tests: a small SCALE-Sim conv topology and the error helper."""

import pytest

from qaccel.cli import main

SMALL_TOPOLOGY = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                  "Num Filter, Strides,\n"
                  "L0,16,16,3,3,8,20,1,\nL1,12,12,3,3,16,40,2,\nL2,1,1,1,1,100,37,1,\n")


@pytest.fixture
def topo(tmp_path):
    """A 3-layer topology file in SCALE-Sim's conv format."""
    p = tmp_path / "small3.csv"
    p.write_text(SMALL_TOPOLOGY)
    return p


@pytest.fixture
def cli_error(capsys):
    """Run ``qaccel argv``; assert exit status 2 and a ``qaccel: error:`` line; return stderr.
    Status 2 is returned by ``main`` (errors found while running) or raised by argparse as
    ``SystemExit(2)`` (bad option values and paths, refused before any work)."""
    def run(argv) -> str:
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        assert status == 2
        err = capsys.readouterr().err
        assert err.startswith("qaccel: error: ")
        return err
    return run

"""The installable package: build the wheel, install it (not editable) into a fresh virtual
environment and use it from an empty directory.

The new environment sees the already-installed dependencies (numpy, torch, amaranth, ...)
through a ``.pth`` line naming this environment's site-packages: a plain path line, so the
``.pth`` files there -- among them the editable install's ``__editable__`` finder, which
maps ``qaccel`` onto this checkout -- are never processed. The script run inside asserts
that ``qaccel``, ``qaccel.sim``, ``qaccel.hw`` and ``qaccel.quant`` come from the new
environment and that no editable finder is loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from qaccel.sim.config import ArrayConfig
from qaccel.sim.schedule import gemm_cycles

ROOT = Path(__file__).resolve().parents[1]
#: what the wheel is built from: the top-level folders installed as qaccel.*
SOURCES = ("pyproject.toml", "README.md", "qaccel", "hw", "sim", "quant")
#: shipped data: every file in these source folders must be in the wheel
DATA = {"sim/data": "qaccel/sim/data", "quant/models": "qaccel/quant/models"}

ROUND_TRIP = r"""
import importlib.metadata, json, sys
import numpy as np
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
import qaccel, qaccel.hw.accelerator
from qaccel import quant
from qaccel.sim import executor
from qaccel.sim.energy import default_table
from qaccel.sim.network import IntNetwork

model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
calib = torch.randn(64, 1, 6, 6)
qm = quant.quantize(model, [calib], quant.QuantConfig(w_bits=8, a_bits=8, per_channel=True))
net = quant.export(qm, calib[:1])
back = IntNetwork.load(net.save("net.npz"))
x = torch.randn(32, 1, 6, 6)
y = executor.run(back, net.input_q.quantize(x.numpy()), trace=True)
fq = quant.integer_outputs(qm, x, exact=True)
pairs = [(L.name, out, fq[L.name]) for L, out in zip(back.layers, y.outputs) if L.name in fq]
print(json.dumps({
    "prefix": sys.prefix,
    "files": {m.__name__: m.__file__ for m in (qaccel, qaccel.sim, qaccel.hw, quant)},
    "editable": sorted(m for m in sys.modules if "editable" in m)
                + [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
    "version": importlib.metadata.version("qaccel"),
    "energy_table": default_table().name,
    "kinds": [L.kind for L in back.layers],
    "compared": [name for name, _, _ in pairs],
    "max_diff": max(int(np.abs(a - b).max()) for _, a, b in pairs),
    "differ": sum(int((a != b).sum()) for _, a, b in pairs),
    "values": sum(int(a.size) for _, a, _ in pairs),
    "distinct_outputs": int(np.unique(y.output).size),
}))
"""


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n" \
                                 f"{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree (setuptools writes build/ and
    *.egg-info next to the sources: never into the checkout or its work directory)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    # --skip-dependency-check: setuptools builds wheels itself; the "wheel" package it lists
    # is not needed (and not installed) with setuptools >= 70.1
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
          "--outdir", base / "dist", src], cwd=base, env=os.environ.copy())
    (whl,) = (base / "dist").glob("qaccel-*.whl")
    return whl


def test_wheel_holds_one_top_level_package_and_its_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/")[0] for n in names}
        dist_info = next(n for n in top if n.endswith(".dist-info"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    assert top == {"qaccel", dist_info}, top
    for pkg in ("qaccel", "qaccel/hw", "qaccel/sim", "qaccel/quant", "qaccel/commands"):
        assert f"{pkg}/__init__.py" in names, pkg
    for folder in ("hw", "sim", "quant"):        # every module of the folder, under qaccel/
        for py in (ROOT / folder).glob("*.py"):
            assert f"qaccel/{folder}/{py.name}" in names, py
    for src, dst in DATA.items():
        shipped = [p for p in (ROOT / src).iterdir() if p.is_file()]
        assert shipped or src == "quant/models", src
        for p in shipped:
            assert f"{dst}/{p.name}" in names, p
    assert "qaccel = qaccel.cli:main" in entry_points


def test_installed_wheel_works_from_an_empty_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path,
         env=os.environ.copy())
    py, exe = venv / "bin" / "python", venv / "bin" / "qaccel"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
          "--no-compile", "--quiet", wheel], cwd=tmp_path, env=os.environ.copy())
    # then the dependencies: this environment's site-packages as a plain path (its .pth
    # files, the editable finder among them, are not processed)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=os.environ.copy()).strip())
    (site / "_qaccel_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = sorted(p.relative_to(site) for p in (site / "qaccel").rglob("*"))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QACCEL"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin",
               QACCEL_HOME=str(tmp_path / "work"), PYTHONNOUSERSITE="1",
               PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _run([exe, "--version"], empty, env).strip() == f"qaccel {version}"

    # the fixed loop nest, whose per-layer cycles have the closed form below (the default,
    # searched mapping is checked against the analytic model in tests/sim)
    _run([exe, "perf", "--network", "resnet18", "--mapping", "fixed", "--json", "r18.json"],
         empty, env)
    perf = json.loads((empty / "r18.json").read_text())
    cfg = ArrayConfig(**perf["config"])
    layers = perf["layers"]
    assert len(layers) == 21                    # 17 convs + 3 downsample convs + fc
    for lp in layers:                           # each layer's cycles from the closed form
        assert lp["cycles"] == lp["repeat"] * gemm_cycles(cfg, lp["T"], lp["K"], lp["N"])
        assert lp["macs"] == lp["repeat"] * lp["T"] * lp["K"] * lp["N"]
    # the vector unit (max pool, 8 residual adds, global average pool) runs serialized
    vec = perf["vector_unit"]
    assert sorted(v["kind"] for v in vec) == ["add"] * 8 + ["global_avgpool", "maxpool2d"]
    for v in vec:
        assert v["cycles"] == -(-v["ops"] // v["lanes"])
    assert perf["totals"]["array_cycles"] == sum(lp["cycles"] for lp in layers)
    assert perf["totals"]["cycles"] == (sum(lp["cycles"] for lp in layers)
                                        + sum(v["cycles"] for v in vec))
    # ResNet-18 at 224 x 224 is the published 1.81 GMAC
    assert perf["totals"]["macs"] == sum(lp["macs"] for lp in layers)
    assert 1.80e9 < perf["totals"]["macs"] < 1.83e9

    out = json.loads(_run([py, "-c", ROUND_TRIP], empty, env).strip().splitlines()[-1])
    assert Path(out["prefix"]) == venv
    for name, file in out["files"].items():     # the wheel's copy, not the checkout
        assert Path(file).is_relative_to(site), (name, file)
        assert not Path(file).is_relative_to(ROOT), (name, file)
    assert out["editable"] == []
    assert out["version"] == version and out["energy_table"] == "horowitz45"
    assert out["kinds"] == ["conv2d", "flatten", "linear"]
    # executor == exact-mode fake-quant integers, layer by layer
    assert out["compared"] == ["0", "3"]
    assert out["max_diff"] == 0 and out["differ"] == 0, out
    assert out["distinct_outputs"] > 10         # a real computation, not a constant
    # nothing was written inside the installed package; outputs went where they were asked
    assert sorted(p.relative_to(site) for p in (site / "qaccel").rglob("*")) == installed
    assert sorted(p.name for p in empty.iterdir()) == ["net.npz", "r18.json"]

"""A sweep's workload, prepared once in the client and shipped to every worker.

The GEMM list of a shipped network comes from tracing the torch model (seconds); it is
cached in the workspace (``sweep/workloads/<hash>.json``) keyed by the workload and the
source of the mapping code, so a sweep maps its network once, not once per point or run.
So is the list of its vector-unit layers (pooling, residual adds, ...), which every point
costs too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from dataclasses import dataclass

from qaccel.sim.workload import ConvGeometry, GemmWorkload, VectorWorkload

from .spec import WorkloadSpec

__all__ = ["WorkloadContext", "prepare", "gemms_to_json", "gemms_from_json",
           "vectors_to_json", "vectors_from_json"]

_GEMM_KEYS = ("name", "T", "K", "N", "repeat", "op", "input_elems")


@dataclass(frozen=True)
class WorkloadContext:
    """What a worker needs to evaluate a point.

    Attributes
    ----------
    label : str
        ``kind:name`` (the store's ``workload`` column).
    kind : str
    gemms : tuple of GemmWorkload
        The layer GEMMs the cost model runs (for ``model`` workloads: the FP32 model's
        shapes; the quantized network has the same GEMMs).
    model : str or None
        Digits model name (workloads with data).
    calib : int
        Calibration images (workloads with data).
    int_network : str or None
        Path of an exported ``net.npz``.
    seq_len : int or None
        Sequence length of a token ``int_network`` (``None``: its exported length).
    bert_tokens : tuple or None
        ``(batch, seq_len)`` of a ``bert_base`` workload, whose vector-unit layers
        (:func:`qaccel.networks.bert.bert_vector_workloads`) every point costs too.
    vector_ops : tuple of VectorWorkload
        The vector-unit layers of another shipped network (its pooling and residual
        adds, :func:`qaccel.networks.network_vector_workloads` with a GELU left
        ``gelu``), which every point costs too.
    workspace : str
        Root of the client's workspace: workers cache shared work below it.
    """

    label: str
    kind: str
    gemms: tuple[GemmWorkload, ...]
    model: str | None = None
    calib: int = 256
    int_network: str | None = None
    workspace: str = ""
    seq_len: int | None = None
    bert_tokens: tuple[int, int] | None = None
    vector_ops: tuple[VectorWorkload, ...] = ()

    def vectors(self, cfg) -> list:
        """The vector-unit layers of a shipped network on ``cfg`` (``bert_base``'s at
        ``cfg.a_bits``, the others' pooling and residual adds); none for topology files."""
        if self.bert_tokens is not None:
            from qaccel.networks.bert import bert_vector_workloads

            return bert_vector_workloads(*self.bert_tokens, a_bits=cfg.a_bits)
        if not self.vector_ops:
            return []
        from qaccel.mapping import vectors_at_bits

        return vectors_at_bits(self.vector_ops, cfg.a_bits)


def gemms_to_json(gemms) -> list[dict]:
    """Every field of each GEMM, the convolution geometry included (the analytic model
    counts a strided or dilated convolution's input traffic from it)."""
    rows = []
    for g in gemms:
        row = {k: getattr(g, k) for k in _GEMM_KEYS}
        row["geometry"] = None if g.geometry is None else dataclasses.asdict(g.geometry)
        rows.append(row)
    return rows


def gemms_from_json(rows) -> tuple[GemmWorkload, ...]:
    out = []
    for r in rows:
        geo = r["geometry"]
        if geo is not None:
            geo = ConvGeometry(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in geo.items()})
        out.append(GemmWorkload(**{k: r[k] for k in _GEMM_KEYS}, geometry=geo))
    return tuple(out)


def vectors_to_json(vectors) -> list[dict]:
    return [v.to_dict() for v in vectors]


def vectors_from_json(rows) -> tuple[VectorWorkload, ...]:
    return tuple(VectorWorkload(**{**r, "in_shapes": tuple(map(tuple, r["in_shapes"])),
                                   "out_shape": tuple(r["out_shape"]),
                                   "in_bits": tuple(r["in_bits"])}) for r in rows)


def _mapping_fingerprint() -> str:
    """SHA-256 of the sources that decide a shipped network's GEMMs."""
    import qaccel.mapping
    import qaccel.networks

    h = hashlib.sha256()
    files = [pathlib.Path(qaccel.mapping.__file__)]
    files += sorted(pathlib.Path(qaccel.networks.__file__).parent.glob("*.py"))
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _json_cached(path, load, compute, dump):
    """``load`` of the JSON cached at ``path``, else ``compute()`` stored there as
    ``dump(value)`` (written to a temporary file, then renamed: readers never see half a
    file; a damaged entry is computed again)."""
    if path.exists():
        try:
            return load(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            pass
    value = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dump(value)))
    tmp.replace(path)
    return value


def network_gemms(name: str, ws, **kw) -> tuple[GemmWorkload, ...]:
    """GEMMs of a shipped network, cached in ``ws`` by content hash."""
    key = hashlib.sha256(json.dumps({"network": name, **kw, "src": _mapping_fingerprint(),
                                     "format": 2},
                                    sort_keys=True).encode()).hexdigest()[:24]
    from qaccel.networks import network_workloads

    return _json_cached(ws.dir("sweep", "workloads") / f"{name}-{key}.json", gemms_from_json,
                        lambda: tuple(network_workloads(name, **kw)), gemms_to_json)


def network_vectors(name: str, ws, **kw) -> tuple[VectorWorkload, ...]:
    """Vector-unit layers of a shipped network, a GELU left ``gelu``
    (:func:`qaccel.networks.network_vector_workloads` with ``a_bits=None``), cached in
    ``ws`` by content hash like :func:`network_gemms`."""
    kw = {k: v for k, v in kw.items() if k != "method"}    # one trace for every front end
    key = hashlib.sha256(json.dumps({"network": name, **kw, "src": _mapping_fingerprint(),
                                     "vectors": 1}, sort_keys=True).encode()).hexdigest()[:24]
    from qaccel.networks import network_vector_workloads

    return _json_cached(ws.dir("sweep", "workloads") / f"{name}-vectors-{key}.json",
                        vectors_from_json,
                        lambda: tuple(network_vector_workloads(name, a_bits=None, **kw)),
                        vectors_to_json)


def prepare(spec: WorkloadSpec, ws) -> WorkloadContext:
    """The :class:`WorkloadContext` of a validated workload (client side)."""
    root = str(ws.root)
    if spec.kind == "network":
        kw = {k: v for k, v in spec.options.items()}
        bert, vectors = None, ()
        if spec.name == "bert_base":
            from qaccel.networks import NETWORKS

            bert = (kw["batch"], kw.get("seq_len") or NETWORKS["bert_base"].input_shape[1])
        else:
            vectors = network_vectors(spec.name, ws, **kw)
        return WorkloadContext(spec.label, spec.kind, network_gemms(spec.name, ws, **kw),
                               workspace=root, bert_tokens=bert, vector_ops=vectors)
    if spec.kind == "topology":
        from qaccel.sim.topology import read_topology

        layers = read_topology(spec.name, gemm=spec.options.get("gemm"))
        return WorkloadContext(spec.label, spec.kind, tuple(x.workload() for x in layers),
                               workspace=root)
    if spec.kind == "model":
        return WorkloadContext(spec.label, spec.kind,
                               network_gemms(spec.name, ws, batch=1, method="auto"),
                               model=spec.name, calib=spec.options["calib"], workspace=root)
    return WorkloadContext(spec.label, spec.kind, (), int_network=spec.name, workspace=root,
                           seq_len=spec.options.get("seq_len"))

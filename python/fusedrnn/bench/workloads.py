"""The benchmark workloads and the GEMMs (hence the FLOPs) each one needs.

A workload is one problem shape; every workload runs for each of its cells: ``rnn``, ``lstm``,
``gru``, or for the ``layernorm`` group (``ln-stock``, ``ln-sine``, ``ln-mid``: the shapes of
``stock``, ``sine`` and ``mid``) the LayerNorm cells ``lnlstm`` and ``lngru``.
Sequence workloads are time-major ``[T, B, I]`` with ``hx=None``; ``stream`` workloads are a
single cell step ``[B, I]`` with a given state (online inference), or a layer call on one time
step ``[1, B, I]`` with a given state ``[L*D, B, H]`` (``stream-layer-*``).

FLOPs (GEMM only)
-----------------
Only matrix-multiply FLOPs are counted (``2*m*k*n`` per ``[m, k] x [k, n]``); the pointwise gate
math, bias adds and reductions (the LayerNorm statistics included) are left out, as is usual
for RNN throughput: a LayerNorm cell counts the GEMMs of its plain cell. With ``G`` gates
(RNN 1, GRU and LN-GRU 3, LSTM and LN-LSTM 4), hidden size ``H``, layer input size ``I_l`` (``I`` for layer 0,
``H * dirs`` above it) and ``N = sum_t B_t`` rows per direction (``T * B``; fewer when packed),
each layer and direction costs

    forward  = 2*N*G*H*I_l      input projection, one GEMM  [N, I_l] x [I_l, G*H]
             + 2*N*G*H*H        recurrent GEMMs, one per step [B_t, H] x [H, G*H]
    backward = 2*N*G*H*I_l      dW_ih = dGates^T x X        [G*H, N] x [N, I_l]
             + 2*N*G*H*H        dW_hh = dGates^T x H_prev   [G*H, N] x [N, H]
             + 2*N*G*H*H        dh_prev per step            [B_t, G*H] x [G*H, H]
             + 2*N*G*H*I_l      dX = dGates x W_ih          [N, G*H] x [G*H, I_l]  (layers > 0 only)

so a training step (forward + backward) is ``2*N*G*H*(2*I_l + 3*H)`` for layer 0 and
``2*N*G*H*(3*I_l + 3*H)`` above it: the input gradient of layer 0 is not counted, because the
input is data that does not require grad (an implementation may skip that GEMM). Every step's
recurrent GEMM is counted, the first one included (no implementation special-cases ``h0 = 0``).
For a ``stream`` cell step ``N = B`` and ``T = 1``; its training step has no input gradient
either. The same GEMM list drives the GEMM ceiling (``measure.gemm_replay``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

GATES = {"rnn": 1, "lstm": 4, "gru": 3, "lnlstm": 4, "lngru": 3}
CELLS = ("rnn", "lstm", "gru")
LN_CELLS = ("lnlstm", "lngru")
ALL_CELLS = CELLS + LN_CELLS


@dataclass(frozen=True)
class Workload:
    name: str  # unique, e.g. "stream-h64"
    group: str  # what --only selects, e.g. "stream"
    B: int
    T: int
    I: int  # noqa: E741
    H: int
    layers: int = 1
    bidir: bool = False
    packed: bool = False
    cell: bool = False  # a single cell step (stream)
    state: bool = False  # a sequence call given its initial state (stream's T = 1 layer calls)
    about: str = ""
    cells: tuple[str, ...] = CELLS  # the cells this workload runs

    @property
    def dirs(self) -> int:
        return 2 if self.bidir else 1

    def lengths(self) -> list[int]:
        """Sequence lengths, non-increasing. Packed workloads use four equal buckets of lengths
        T, 3T/4, T/2, T/4 (so per-step batch sizes take four values, as with bucketed data)."""
        if not self.packed:
            return [self.T] * self.B
        fracs = (4, 3, 2, 1)
        out = []
        for i in range(self.B):
            q = fracs[min(3, i * 4 // self.B)]
            out.append(max(1, self.T * q // 4))
        return out

    def batch_sizes(self) -> list[int]:
        """Active batch per time step (``PackedSequence.batch_sizes``)."""
        if self.cell:
            return [self.B]
        lens = self.lengths()
        return [sum(1 for n in lens if n > t) for t in range(self.T)]

    def describe(self) -> str:
        parts = [f"B={self.B}", f"T={self.T}" if not self.cell else "1 step"]
        parts += [f"I={self.I}", f"H={self.H}"]
        if self.layers > 1:
            parts.append(f"{self.layers} layers")
        if self.bidir:
            parts.append("bidirectional")
        if self.packed:
            parts.append("packed (lengths T, 3T/4, T/2, T/4)")
        if self.state:
            parts.append("given state")
        return ", ".join(parts)


FULL = (
    Workload("stock", "stock", 32, 30, 1, 64, layers=2, about="the stock-price model"),
    Workload("sine", "sine", 784, 20, 1, 32, about="full-batch sine forecasting"),
    Workload("mid", "mid", 64, 100, 128, 256),
    Workload("large", "large", 64, 50, 512, 1024),
    Workload("stream-h64", "stream", 1, 1, 1, 64, cell=True, about="online step of stock"),
    Workload("stream-h256", "stream", 1, 1, 128, 256, cell=True, about="online step of mid"),
    Workload("stream-layer-h64", "stream", 1, 1, 1, 64, state=True, about="T = 1 layer call"),
    Workload("stream-layer-h256", "stream", 1, 1, 128, 256, state=True, about="T = 1 layer call"),
    Workload("mid-bidir", "mid-bidir", 64, 100, 128, 256, bidir=True),
    Workload("mid-packed", "mid-packed", 64, 100, 128, 256, packed=True),
    Workload(
        "ln-stock",
        "layernorm",
        32,
        30,
        1,
        64,
        layers=2,
        cells=LN_CELLS,
        about="stock with LayerNorm cells",
    ),
    Workload("ln-sine", "layernorm", 784, 20, 1, 32, cells=LN_CELLS),
    Workload("ln-mid", "layernorm", 64, 100, 128, 256, cells=LN_CELLS),
)

# --quick: the same names and kinds, tiny sizes (for tests and smoke runs).
QUICK = (
    Workload("stock", "stock", 4, 5, 1, 8, layers=2),
    Workload("sine", "sine", 16, 4, 1, 4),
    Workload("mid", "mid", 4, 6, 5, 8),
    Workload("large", "large", 4, 4, 12, 16),
    Workload("stream-h64", "stream", 1, 1, 1, 8, cell=True),
    Workload("stream-h256", "stream", 1, 1, 5, 16, cell=True),
    Workload("stream-layer-h64", "stream", 1, 1, 1, 8, state=True),
    Workload("stream-layer-h256", "stream", 1, 1, 5, 16, state=True),
    Workload("mid-bidir", "mid-bidir", 4, 6, 5, 8, bidir=True),
    Workload("mid-packed", "mid-packed", 8, 6, 5, 8, packed=True),
    Workload("ln-stock", "layernorm", 4, 5, 1, 8, layers=2, cells=LN_CELLS),
    Workload("ln-sine", "layernorm", 16, 4, 1, 4, cells=LN_CELLS),
    Workload("ln-mid", "layernorm", 4, 6, 5, 8, cells=LN_CELLS),
)

GROUPS = tuple(dict.fromkeys(w.group for w in FULL))


def select(only: str | None, quick: bool) -> list[Workload]:
    """Workloads whose name or group is in the comma-separated ``only`` (all when None)."""
    pool = QUICK if quick else FULL
    if not only:
        return list(pool)
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    known = {w.name for w in pool} | {w.group for w in pool}
    bad = [s for s in wanted if s not in known]
    if bad:
        raise ValueError(f"unknown workload(s) {bad}; choose from {sorted(known)}")
    return [w for w in pool if w.name in wanted or w.group in wanted]


@dataclass(frozen=True)
class Gemm:
    """``count`` products ``op(A) [m, k] x op(B) [k, n]``; ``ta``/``tb``: the operand is a
    transposed view of a contiguous tensor (as in the real computation)."""

    m: int
    k: int
    n: int
    ta: bool = False
    tb: bool = False
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def gemms(w: Workload, cell: str, training: bool) -> list[Gemm]:
    """The GEMMs of one inference forward or one training step (see the module docstring)."""
    G = GATES[cell]
    GH = G * w.H
    steps = Counter(w.batch_sizes())  # per-step batch size -> number of steps
    N = sum(w.batch_sizes())
    out: list[Gemm] = []
    for layer in range(w.layers):
        i_l = w.I if layer == 0 else w.H * w.dirs
        for _ in range(w.dirs):
            out.append(Gemm(N, i_l, GH, tb=True))  # X W_ih^T
            out += [Gemm(b, w.H, GH, tb=True, count=c) for b, c in steps.items()]  # h W_hh^T
            if training:
                out.append(Gemm(GH, N, i_l, ta=True))  # dW_ih
                out.append(Gemm(GH, N, w.H, ta=True))  # dW_hh
                out += [Gemm(b, GH, w.H, count=c) for b, c in steps.items()]  # dh_prev
                if layer > 0:
                    out.append(Gemm(N, GH, i_l))  # dX
    return out


def flops(w: Workload, cell: str, training: bool) -> int:
    return sum(g.flops for g in gemms(w, cell, training))

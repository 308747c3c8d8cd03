"""Vanishing and exploding gradients, measured by real BPTT through the fused kernels.

What is measured
    For a loss at the last step, L = <v, h_T> with a fixed unit vector v per sequence (so
    ||dL/dh_T|| = 1), the norm of the total derivative dL/dh_k at every step k = 0..T, averaged
    over the batch. The ratio ||dL/dh_0|| / ||dL/dh_T|| is how much of the training signal from
    the loss reaches an input T steps back.

How (and why it is correct)
    The sequence is run one step at a time through the fused *cell* ops
    (``fusedrnn.rnn_cell`` / ``lstm_cell`` / ``gru_cell``), keeping every h_k as a graph node with
    ``retain_grad()``. One ``backward()`` then runs BPTT through the cells' registered backward
    kernels, and ``h_k.grad`` is exactly dL/dh_k: the sum over every path from h_k to the loss
    (for the LSTM, holding c_k fixed: the gradient that also flows through c arrives via the
    gates of step k+1). A second, independent method runs the fused *layer* op (the whole time
    loop in C++) on the suffix x[k:] from the state at k and takes the gradient with respect to
    its ``h0``; both agree to rounding (``check_methods`` prints the largest difference, the
    tests assert it), and the NumPy reference (``fusedrnn.reference``) agrees with both.

Setup
    Recurrent weights: each H x H gate block of ``weight_hh`` is ``radius * Q`` with Q a random
    orthogonal matrix, so its spectral radius *and every singular value* equal ``radius``: near
    the zero state the Jacobian of one RNN step is exactly radius * Q, and the gradient scales
    as radius^(T-k) until tanh saturates. Input weights use torch's default initialisation,
    inputs are N(0, input_scale^2), recurrent biases are zero except the LSTM forget / GRU update
    gate bias (``--gate-bias``): that gate is what lets LSTM/GRU carry a gradient, and with a
    closed gate (bias 0, gate ~ 0.5) they forget as fast as the RNN (the gate-bias table shows it).

Reading the numbers
    RNN: the gradient reaching T steps back scales as radius^T (0.5^100 ~ 1e-30) for radius < 1.
    Above 1 it grows, exactly as radius^T with ``--input-scale 0`` (the state stays at 0, where
    tanh' = 1; 1.3^100 ~ 2.5e11), more slowly with inputs, because the growing state saturates
    tanh and tanh' < 1 (the tanh plot) caps the growth. LSTM/GRU with the gate open are nearly
    insensitive to the radius: the forget/update gate adds a near-identity path (f, z ~ 0.95),
    so nothing vanishes; near the zero state the LSTM's loop gain is about f + i*o*radius > 1,
    so its dL/dh_k even grows mildly going back. With the gate closed (bias 0) they vanish like
    the RNN. Clipping does not change dL/dh_k (it rescales the parameter gradient): it is what
    keeps SGD on an exploding RNN from diverging.

Also here: the tanh / tanh' curve, the effect of gradient-norm clipping when training an RNN in
the exploding regime, and a long-range memory task (recall a symbol seen T steps ago) on
which the LSTM learns and the RNN fails as T grows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fusedrnn
from fusedrnn import train

from ._common import (
    add_run_args,
    check_writable,
    choice_list,
    number,
    number_list,
    quick_settings,
    run_with_threads,
    seed_arg,
    write_atomic,
)

PROG = "fusedrnn gradients"

CELLS = ("rnn", "lstm", "gru")
N_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
DEFAULT_LENGTHS = (5, 10, 20, 50, 100)
DEFAULT_RADII = (0.5, 0.8, 0.9, 1.0, 1.1, 1.3)


# ---- weights, inputs and the two measurement methods -----------------------------------------
def init_weights(
    cell: str,
    input_size: int,
    hidden_size: int,
    radius: float,
    *,
    gate_bias: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """``[w_ih, w_hh, b_ih, b_hh]`` in torch.nn layout; every gate block of ``w_hh`` is
    ``radius`` times a random orthogonal matrix; biases zero except the LSTM forget gate /
    GRU update gate, set to ``gate_bias``."""
    g = torch.Generator().manual_seed(seed)
    G, H = N_GATES[cell], hidden_size
    k = 1.0 / math.sqrt(H)
    w_ih = (torch.rand(G * H, input_size, generator=g, dtype=dtype) * 2 - 1) * k
    blocks = []
    for _ in range(G):
        q, r = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=dtype))
        blocks.append(radius * q * torch.sign(torch.diagonal(r)))  # Haar-distributed Q
    w_hh = torch.cat(blocks)
    b_ih = torch.zeros(G * H, dtype=dtype)
    b_hh = torch.zeros(G * H, dtype=dtype)
    if cell in ("lstm", "gru"):
        b_ih[H : 2 * H] = gate_bias  # LSTM gates i,f,g,o: f is block 1; GRU r,z,n: z is block 1
    return [w_ih, w_hh, b_ih, b_hh]


def make_inputs(T: int, batch: int, input_size: int, scale: float, seed: int = 0):
    """Inputs x [T, B, I] ~ N(0, scale^2) and unit loss directions v [B, H] (H filled later)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    return torch.randn(T, batch, input_size, generator=g, dtype=torch.float64) * scale


def loss_direction(batch: int, hidden: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(20_000 + seed)
    v = torch.randn(batch, hidden, generator=g, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def _cell_step(cell: str, x, h, c, w):
    if cell == "rnn":
        return fusedrnn.rnn_cell(x, h, *w), None
    if cell == "lstm":
        return fusedrnn.lstm_cell(x, h, c, *w)
    return fusedrnn.gru_cell(x, h, *w), None


def hidden_grad_norms(cell: str, w, x: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """||dL/dh_k|| for k = 0..T (batch mean), L = sum_b <v_b, h_T,b>, by BPTT through the
    fused cell ops step by step with retained grads on every h_k."""
    T, B, _ = x.shape
    H = w[1].shape[1]
    h = torch.zeros(B, H, dtype=x.dtype, requires_grad=True)
    c = torch.zeros(B, H, dtype=x.dtype) if cell == "lstm" else None
    hs = [h]
    for t in range(T):
        h, c = _cell_step(cell, x[t], h, c, w)
        h.retain_grad()
        hs.append(h)
    (h * v).sum().backward()
    return np.array([hk.grad.norm(dim=1).mean().item() for hk in hs])


def _layer(cell, x, w, h0, c0):
    if cell == "rnn":
        out, hn = fusedrnn.rnn_layer(x, *w, h0=h0)
        return hn, None
    if cell == "lstm":
        _, hn, cn = fusedrnn.lstm_layer(x, *w, h0=h0, c0=c0)
        return hn, cn
    _, hn = fusedrnn.gru_layer(x, *w, h0=h0)
    return hn, None


def hidden_grad_norms_layers(cell: str, w, x: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """The same quantity by a second method: for each k, run the fused layer op on x[k:] from
    the (detached) state at step k and take the gradient of L with respect to its h0.
    Quadratic in T; used as a cross-check."""
    T, B, _ = x.shape
    H = w[1].shape[1]
    zeros = torch.zeros(B, H, dtype=x.dtype)
    norms = []
    for k in range(T + 1):
        with torch.no_grad():
            hk, ck = _layer(cell, x[:k], w, zeros, zeros if cell == "lstm" else None)
        hk = hk.clone().requires_grad_(True)
        hT, _ = _layer(cell, x[k:], w, hk, ck)
        (g,) = torch.autograd.grad((hT * v).sum(), hk)
        norms.append(g.norm(dim=1).mean().item())
    return np.array(norms)


def measure(
    cell, T, radius, *, hidden=32, batch=16, input_size=4, input_scale=0.1, gate_bias=0.0, seed=0
) -> np.ndarray:
    """||dL/dh_k||, k = 0..T, for one cell / length / radius."""
    w = init_weights(cell, input_size, hidden, radius, gate_bias=gate_bias, seed=seed)
    x = make_inputs(T, batch, input_size, input_scale, seed)
    return hidden_grad_norms(cell, w, x, loss_direction(batch, hidden, seed))


def check_methods(cell, T=12, radius=1.1, hidden=16, batch=4, gate_bias=1.0) -> float:
    """Largest relative difference between the cell-by-cell and the layer-suffix methods."""
    w = init_weights(cell, 4, hidden, radius, gate_bias=gate_bias, seed=1)
    x = make_inputs(T, batch, 4, 0.5, 1)
    v = loss_direction(batch, hidden, 1)
    a = hidden_grad_norms(cell, w, x, v)
    b = hidden_grad_norms_layers(cell, w, x, v)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# ---- the sweep ---------------------------------------------------------------------------
def sweep(cells, lengths, radii, *, gate_bias, **kw) -> dict:
    """``{cell: {radius: {T: norms [T+1]}}}``."""
    out: dict = {}
    for cell in cells:
        gb = gate_bias if cell != "rnn" else 0.0
        out[cell] = {
            r: {T: measure(cell, T, r, gate_bias=gb, **kw) for T in lengths} for r in radii
        }
    return out


def ratio(norms: np.ndarray) -> float:
    """||dL/dh_0|| / ||dL/dh_T||: the gradient reaching the first state."""
    return float(norms[0] / norms[-1])


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return f"{v:>9}"
    return f"{v:9.1e}"


def format_sweep_table(res: dict, lengths, radii, gate_bias: float) -> str:
    head = "cell  radius | " + " ".join(f"{'T=' + str(T):>9}" for T in lengths) + " | per step"
    lines = [
        "||dL/dh_0|| / ||dL/dh_T|| (loss at the last step T; gradient reaching the first state)",
        f"gate bias for lstm/gru = {gate_bias:g}; per step = ratio^(1/T) at T = {max(lengths)}",
        head,
        "-" * len(head),
    ]
    for cell, by_r in res.items():
        for r in radii:
            rs = [ratio(by_r[r][T]) for T in lengths]
            per = rs[-1] ** (1.0 / max(lengths)) if rs[-1] > 0 else 0.0
            lines.append(
                f"{cell:<5} {r:6.2f} | " + " ".join(_fmt(x) for x in rs) + f" | {per:8.3f}"
            )
    return "\n".join(lines)


def gate_bias_table(T, radius, biases, **kw) -> tuple[str, dict]:
    vals = {
        cell: {b: ratio(measure(cell, T, radius, gate_bias=b, **kw)) for b in biases}
        for cell in ("lstm", "gru")
    }
    head = "cell | " + " ".join(f"{'bias=' + format(b, 'g'):>10}" for b in biases)
    lines = [
        f"gate bias (LSTM forget / GRU update gate) vs gradient reaching T={T} steps back"
        f" (radius {radius:g})",
        head,
        "-" * len(head),
    ]
    for cell, row in vals.items():
        lines.append(f"{cell:<4} | " + " ".join(f"{row[b]:10.1e}" for b in biases))
    return "\n".join(lines), vals


# ---- gradient clipping in the exploding regime ---------------------------------------------
class _RNNRegressor(nn.Module):
    """A tanh RNN (fused layer op) with a linear readout of h_T."""

    def __init__(self, input_size, hidden, radius, seed):
        super().__init__()
        w = init_weights("rnn", input_size, hidden, radius, seed=seed, dtype=torch.float32)
        self.w = nn.ParameterList([nn.Parameter(t) for t in w])
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        _, hn = fusedrnn.rnn_layer(x, *self.w)
        return self.head(hn).squeeze(-1)


def _train_clip_run(radius, T, hidden, steps, lr, clip, batch, input_scale, seed) -> dict:
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps + 1, T, batch, 4, generator=gen) * input_scale
    torch.manual_seed(seed)
    model = _RNNRegressor(4, hidden, radius, seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, norms = [], []
    for s in range(steps):
        x = xs[s]
        y = x[0, :, 0] / input_scale  # the first input, in units of its std
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), clip or float("inf"))
        opt.step()
        losses.append(loss.item())
        norms.append(float(gn))
    with torch.no_grad():
        x = xs[steps]
        final = float(nn.functional.mse_loss(model(x), x[0, :, 0] / input_scale))
    return {"loss": losses, "grad_norm": norms, "final_loss": final}


def clipping_demo(*, radius=1.3, T=50, hidden=32, steps=100, lr=0.1, max_norm=1.0, batch=32,
                  input_scale=0.1, seeds=5, seed=0) -> dict:  # fmt: skip
    """Train the same exploding-regime RNN (task: output the first input's first component
    after T steps; MSE) with plain SGD, without and with gradient-norm clipping, from
    ``seeds`` different initialisations/data streams. Returns, per setting, the runs'
    per-step losses and pre-clipping gradient norms and their held-out losses."""
    out = {}
    for name, clip in (("no clipping", None), (f"clip {max_norm:g}", max_norm)):
        out[name] = [
            _train_clip_run(radius, T, hidden, steps, lr, clip, batch, input_scale, seed + k)
            for k in range(seeds)
        ]
    return out


def _diverged(run) -> bool:
    return not np.isfinite(run["final_loss"]) or run["final_loss"] > 10 * run["loss"][0]


def format_clipping(res: dict, radius: float, T: int, lr: float) -> str:
    n = len(next(iter(res.values())))
    lines = [
        f"gradient clipping: tanh RNN, recurrent radius {radius:g}, T={T}, SGD lr {lr:g}, {n} runs"
        " (target: the first input; MSE, 1.0 = predicting 0)",
        f"{'run':<12} | {'diverged':>8} | {'max |g| (median run)':>21} | "
        f"{'held-out loss (median of finite runs)':>37}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, runs in res.items():
        div = sum(_diverged(r) for r in runs)
        gmax = np.median([np.max(np.nan_to_num(r["grad_norm"], nan=np.inf)) for r in runs])
        finite = [r["final_loss"] for r in runs if np.isfinite(r["final_loss"])]
        held = _fmt(float(np.median(finite))) if finite else f"{'-':>9}"
        lines.append(f"{name:<12} | {div:>4} / {n:<1} | {_fmt(gmax):>21} | {held:>37}")
    return "\n".join(lines)


# ---- long-range memory --------------------------------------------------------------------
def chrono_init(rnn: nn.Module, t_max: int) -> None:
    """Chrono initialisation (Tallec & Ollivier, 2018) of a one-layer LSTM/GRU: forget-gate
    (GRU: update-gate) biases log(U(1, t_max - 1)), so units start with memory time scales
    spread up to t_max; for the LSTM the input-gate biases are their negatives (it starts
    writing little). Recurrent biases are zeroed for those gates."""
    H = rnn.hidden_size
    with torch.no_grad():
        b = torch.log(torch.empty(H).uniform_(1.0, float(t_max - 1)))
        rnn.bias_ih_l0[H : 2 * H] = b  # LSTM f / GRU z
        rnn.bias_hh_l0[H : 2 * H] = 0.0
        if rnn.mode == "LSTM":
            rnn.bias_ih_l0[:H] = -b  # input gate
            rnn.bias_hh_l0[:H] = 0.0


class _Recall(nn.Module):
    """One-hot input (+ marker) -> fused RNN/LSTM/GRU -> linear readout of h_T."""

    def __init__(self, cell, symbols, hidden, chrono_T=0):
        super().__init__()
        cls = {"rnn": fusedrnn.RNN, "lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[cell]
        self.rnn = cls(symbols + 1, hidden)
        if cell != "rnn" and chrono_T > 2:
            chrono_init(self.rnn, chrono_T)
        self.head = nn.Linear(hidden, symbols)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[-1])


def recall_batch(T, batch, symbols, gen):
    """Inputs [T, B, K+1]: a random symbol (one-hot over K) at every step, and a marker channel
    set only at step 0; the target, read after step T-1, is the marked (first) symbol. The
    later symbols are distractors: the model must store one input and ignore T-1 others."""
    s = torch.randint(0, symbols, (T, batch), generator=gen)
    x = torch.zeros(T, batch, symbols + 1)
    x[..., :symbols] = nn.functional.one_hot(s, symbols).float()
    x[0, :, symbols] = 1.0
    return x, s[0]


def memory_task(cells, lengths, *, symbols=4, hidden=32, steps=1500, batch=32, lr=3e-3,
                chrono=True, test_size=1000, seed=0) -> dict:  # fmt: skip
    """``{cell: {T: test accuracy}}`` after ``steps`` Adam steps (gradient norm clipped to 1)
    on fresh batches; with ``chrono`` the LSTM/GRU gate biases get the chrono initialisation
    for time scales up to T (the RNN has no gate to initialise)."""
    res: dict = {c: {} for c in cells}
    for T in lengths:
        test_x, test_y = recall_batch(T, test_size, symbols, torch.Generator().manual_seed(999))
        for cell in cells:
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = _Recall(cell, symbols, hidden, T if chrono else 0)
            opt = train.adam(model.parameters(), lr=lr)
            for _ in range(steps):
                x, y = recall_batch(T, batch, symbols, gen)
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                acc = (model(test_x).argmax(-1) == test_y).float().mean().item()
            res[cell][T] = acc
    return res


def format_memory(res: dict, lengths, symbols: int, steps: int, chrono: bool = True) -> str:
    head = f"{'T':>5} | " + " ".join(f"{c:>6}" for c in res) + f" | chance {1 / symbols:.2f}"
    lines = [
        f"long-range memory: recall the marked first of T symbols ({symbols} kinds; the other"
        f" T-1 are distractors), test accuracy after {steps} training steps;"
        f" LSTM/GRU gate biases: {'chrono init up to T' if chrono else 'torch default'}",
        head,
        "-" * len(head),
    ]
    for T in lengths:
        lines.append(f"{T:>5} | " + " ".join(f"{res[c][T]:6.2f}" for c in res))
    return "\n".join(lines)


# ---- plots --------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def plot_norms(res: dict, lengths, radii, path: Path) -> None:
    plt = _plt()
    cells = list(res)
    Tmax = max(lengths)
    fig, axes = plt.subplots(2, len(cells), figsize=(5 * len(cells), 8), squeeze=False)
    cmap = plt.get_cmap("plasma_r")
    for j, cell in enumerate(cells):
        ax = axes[0, j]
        for i, r in enumerate(radii):
            n = res[cell][r][Tmax]
            back = np.arange(Tmax, -1, -1)  # steps between h_k and the loss
            col = cmap(0.1 + 0.8 * i / max(len(radii) - 1, 1))
            ax.semilogy(back, np.maximum(n, 1e-300), color=col, label=f"radius {r:g}")
            if cell == "rnn":
                ax.semilogy(back, float(r) ** back, color=col, ls=":", lw=0.8)
        ax.set_title(
            f"{cell}: ||dL/dh_k||, loss at T={Tmax}"
            + (" (dotted: radius^k)" if cell == "rnn" else "")
        )
        ax.set_xlabel("steps back from the loss (T - k)")
        ax.set_ylabel("gradient norm")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1, j]
        for i, r in enumerate(radii):
            ax.semilogy(lengths, [ratio(res[cell][r][T]) for T in lengths], "o-",
                        color=cmap(0.1 + 0.8 * i / max(len(radii) - 1, 1)), label=f"radius {r:g}")  # fmt: skip
        ax.set_title(f"{cell}: ||dL/dh_0|| / ||dL/dh_T|| vs sequence length")
        ax.set_xlabel("sequence length T")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_tanh(path: Path) -> None:
    plt = _plt()
    a = np.linspace(-5, 5, 401)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(a, np.tanh(a), label="tanh(a)")
    ax.plot(a, 1 - np.tanh(a) ** 2, label="tanh'(a) = 1 - tanh(a)^2")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title("tanh saturates: its derivative is <= 1 and ~0 for |a| > 3")
    ax.set_xlabel("pre-activation a")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_clipping(res: dict, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in res.items():
        r = runs[0]
        axes[0].semilogy(np.maximum(r["grad_norm"], 1e-12), label=name)
        axes[1].semilogy(np.maximum(r["loss"], 1e-12), label=name)
    axes[0].set_title("gradient norm before clipping (first run; gaps: inf/NaN)")
    axes[1].set_title("training loss (MSE)")
    for ax in axes:
        ax.set_xlabel("SGD step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# ---- CLI -----------------------------------------------------------------------------------
def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    pos = lambda kind: number(kind, 0, lo_open=True)  # noqa: E731
    a("--cells", type=choice_list(CELLS), default="rnn,lstm,gru",
      help="comma list of rnn, lstm, gru")  # fmt: skip
    a("--lengths", type=number_list(int, 1), default=list(DEFAULT_LENGTHS),
      help="sequence lengths")  # fmt: skip
    # a radius scales orthogonal matrices: their singular values, so it is > 0
    a("--radii", type=number_list(float, 0, lo_open=True), default=list(DEFAULT_RADII),
      help="recurrent spectral radii")  # fmt: skip
    a("--hidden", type=number(int, 1), default=32, help="hidden size")
    a("--batch", type=number(int, 1), default=16,
      help="sequences per measurement (norms are averaged)")  # fmt: skip
    # 0 is meaningful: the state stays at 0 and an RNN's gradient scales exactly as radius^T
    a("--input-scale", type=number(float, 0), default=0.1, help="std of the N(0, s^2) inputs")
    a("--gate-bias", type=number(float), default=3.0,
      help="LSTM forget / GRU update gate bias (sigmoid(3) = 0.95: gate open)")  # fmt: skip
    a("--clip-radius", type=pos(float), default=1.3,
      help="recurrent radius of the clipping demo")  # fmt: skip
    a("--clip-steps", type=number(int, 1), default=100, help="SGD steps of the clipping demo")
    a("--clip-lr", type=pos(float), default=0.1, help="SGD learning rate of the clipping demo")
    a("--clip-runs", type=number(int, 1), default=5,
      help="runs (seeds) per setting in the clipping demo")  # fmt: skip
    # 0 would read as "no clipping" (clip or inf) under a "clip 0" label
    a("--max-norm", type=pos(float), default=1.0, help="gradient-norm clipping threshold")
    a("--memory-lengths", type=number_list(int, 1), default=[10, 30, 100],
      help="memory-task lengths")  # fmt: skip
    a("--memory-steps", type=number(int, 1), default=1500,
      help="Adam steps per memory-task model")  # fmt: skip
    a(
        "--no-chrono",
        action="store_true",
        help="memory task: torch's default LSTM/GRU init instead of the chrono initialisation",
    )
    a("--memory-hidden", type=number(int, 1), default=32,
      help="hidden size of the memory-task models")  # fmt: skip
    a("--no-memory", action="store_true", help="skip the memory task")
    a("--out", default="out/gradients", help="folder for plots and results.json")
    a("--no-plots", action="store_true", help="skip the plots")
    a("--seed", type=seed_arg, default=0, help="seeds weights, inputs and training data")
    add_run_args(parser)


def run(args) -> int:
    check_writable(args.out, PROG)
    return run_with_threads(args, _run)


def _run(args) -> int:
    t0 = time.perf_counter()
    cells = args.cells
    quick = quick_settings(args, lengths=[5, 20, 50], radii=[0.5, 1.0, 1.3], hidden=16, batch=4,
                           clip_steps=10, clip_runs=2, memory_lengths=[5, 10], memory_steps=20,
                           memory_hidden=8)  # fmt: skip
    for k, v in quick.items():
        setattr(args, k, v)
    # repeats would collapse in the result dicts but show twice in the tables
    lengths, radii = sorted(set(args.lengths)), list(dict.fromkeys(args.radii))
    clip_T, clip_steps, clip_runs = 20 if args.quick else 50, args.clip_steps, args.clip_runs
    mem_lengths = list(dict.fromkeys(args.memory_lengths))
    mem_steps, mem_hidden = args.memory_steps, args.memory_hidden
    hidden, batch = args.hidden, args.batch
    kw = dict(hidden=hidden, batch=batch, input_scale=args.input_scale, seed=args.seed)
    out = Path(args.out)

    print(f"fusedrnn gradients: BPTT through the fused ops ({torch.get_num_threads()} thread(s))")
    for cell in cells:
        print(
            f"  method check ({cell}): cell-by-cell vs layer-suffix, max rel diff "
            f"{check_methods(cell):.1e}"
        )
    res = sweep(cells, lengths, radii, gate_bias=args.gate_bias, **kw)
    print()
    print(format_sweep_table(res, lengths, radii, args.gate_bias))
    gb_text, gb = gate_bias_table(max(lengths), 1.0, [0.0, 1.0, 3.0], **kw)
    print()
    print(gb_text)

    clip = clipping_demo(radius=args.clip_radius, T=clip_T, hidden=hidden, steps=clip_steps,
                         lr=args.clip_lr, max_norm=args.max_norm, seeds=clip_runs,
                         seed=args.seed)  # fmt: skip
    print()
    print(format_clipping(clip, args.clip_radius, clip_T, args.clip_lr))

    mem = None
    if not args.no_memory:
        mem = memory_task(cells, mem_lengths, hidden=mem_hidden, steps=mem_steps,
                          chrono=not args.no_chrono, seed=args.seed)  # fmt: skip
        print()
        print(format_memory(mem, mem_lengths, 4, mem_steps, not args.no_chrono))

    if not args.no_plots:
        plot_norms(res, lengths, radii, out / "gradient_norms.png")
        plot_tanh(out / "tanh.png")
        plot_clipping(clip, out / "clipping.png")
    results = {
        "lengths": lengths,
        "radii": radii,
        "gate_bias": args.gate_bias,
        "ratio": {
            c: {str(r): {str(T): ratio(res[c][r][T]) for T in lengths} for r in radii} for c in res
        },
        "norms_longest": {
            c: {str(r): res[c][r][max(lengths)].tolist() for r in radii} for c in res
        },
        "gate_bias_sweep": {c: {str(b): v for b, v in row.items()} for c, row in gb.items()},
        "clipping": clip,
        "memory": mem,
    }
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    print(f"\nplots and results.json in {out}/ ({time.perf_counter() - t0:.1f} s)")
    return 0

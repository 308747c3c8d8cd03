"""Readable NumPy reference implementations of the Elman RNN, LSTM and GRU.

One time step at a time, written for reading rather than speed: each class keeps its hidden
(and cell) state, can be ``reset()``, records every step's gate values for visualisation
(``model.history``) and runs backpropagation through time in NumPy (``model.backward``).

Weights use ``torch.nn``'s layout and gate order, so the same numbers can be loaded from a
``torch.nn.RNN/LSTM/GRU`` (single layer, one direction, no ``proj_size``) or the matching cell:

    ``w_ih`` [G*H, I], ``w_hh`` [G*H, H], ``b_ih`` [G*H], ``b_hh`` [G*H]

with G = 1 (RNN), 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n). Shapes: x_t is [B, I], h and c are
[B, H]; a whole sequence is time-major [T, B, I].

The equations (sigma = logistic sigmoid, * = elementwise):

    RNN   h' = act(W_ih x + b_ih + W_hh h + b_hh),  act = tanh or relu
    LSTM  i, f, g, o = split(W_ih x + b_ih + W_hh h + b_hh)
          i, f, o = sigma(i), sigma(f), sigma(o);  g = tanh(g)
          c' = f * c + i * g;  h' = o * tanh(c')
    GRU   r = sigma(W_ir x + b_ir + W_hr h + b_hr)
          z = sigma(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
          h' = (1 - z) * n + z * h

The LayerNorm variants (Ba, Kiros & Hinton 2016, as ``fusedrnn.LayerNormLSTM/GRU``), with
LN(v; w) = w * (v - mean(v)) / sqrt(var(v) + 1e-5) over the last dimension (biased variance)
and the extra parameters ``ln_ih``, ``ln_hh`` [G*H] and (LSTM) ``ln_c``, ``ln_c_b`` [H]:

    LN-LSTM  i, f, g, o = split(LN(W_ih x; ln_ih) + LN(W_hh h; ln_hh) + b_ih + b_hh)
             c' = sigma(f) * c + sigma(i) * tanh(g)       (the carried state, not normalised)
             h' = sigma(o) * tanh(LN(c'; ln_c) + ln_c_b)
    LN-GRU   gi = LN(W_ih x; ln_ih) + b_ih;  gh = LN(W_hh h; ln_hh) + b_hh
             r, z = sigma(gi_r + gh_r), sigma(gi_z + gh_z);  n = tanh(gi_n + r * gh_n)
             h' = (1 - z) * n + z * h

These are the third oracle (beside ``torch.nn`` and ``gradcheck``) for the fused kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GRU", "LSTM", "ElmanRNN", "LayerNormGRU", "LayerNormLSTM", "from_torch", "layer_norm",
           "sigmoid"]  # fmt: skip


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _to_numpy(t, dtype):
    if t is None:
        return None
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.array(t, dtype=dtype, copy=True)


@dataclass
class _Step:
    """What one forward step saw and computed (kept for backward and for plots)."""

    x: np.ndarray
    h_prev: np.ndarray
    h: np.ndarray
    gates: dict[str, np.ndarray] = field(default_factory=dict)
    c_prev: np.ndarray | None = None
    c: np.ndarray | None = None


class _Recurrent:
    """Shared machinery: parameters, state, history, sequence forward and BPTT backward."""

    n_gates = 1
    has_cell = False
    gate_names: tuple[str, ...] = ()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        seed: int | None = 0,
        dtype=np.float64,
    ):
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = bool(bias)
        self.dtype = dtype
        # torch.nn's default initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter.
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(hidden_size)
        G, H, I = self.n_gates, hidden_size, input_size
        self.w_ih = rng.uniform(-k, k, (G * H, I)).astype(dtype)
        self.w_hh = rng.uniform(-k, k, (G * H, H)).astype(dtype)
        self.b_ih = rng.uniform(-k, k, G * H).astype(dtype) if bias else np.zeros(G * H, dtype)
        self.b_hh = rng.uniform(-k, k, G * H).astype(dtype) if bias else np.zeros(G * H, dtype)
        self.h: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self.history: list[_Step] = []

    # ---- parameters ---------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """The parameters by torch.nn's cell names (``weight_ih`` ...), as live arrays."""
        p = {"weight_ih": self.w_ih, "weight_hh": self.w_hh}
        if self.bias:
            p.update(bias_ih=self.b_ih, bias_hh=self.b_hh)
        return p

    def load(self, w_ih, w_hh, b_ih=None, b_hh=None) -> _Recurrent:
        """Load weights (NumPy arrays or tensors) in torch.nn layout; returns self."""
        G, H, I = self.n_gates, self.hidden_size, self.input_size
        w_ih, w_hh = _to_numpy(w_ih, self.dtype), _to_numpy(w_hh, self.dtype)
        if w_ih.shape != (G * H, I) or w_hh.shape != (G * H, H):
            raise ValueError(
                f"expected w_ih {(G * H, I)} and w_hh {(G * H, H)}, "
                f"got {w_ih.shape} and {w_hh.shape}"
            )
        self.w_ih, self.w_hh = w_ih, w_hh
        self.bias = b_ih is not None or b_hh is not None
        zeros = np.zeros(G * H, self.dtype)
        self.b_ih = _to_numpy(b_ih, self.dtype) if b_ih is not None else zeros.copy()
        self.b_hh = _to_numpy(b_hh, self.dtype) if b_hh is not None else zeros.copy()
        return self

    def load_torch(self, module, layer: int = 0, suffix: str = "") -> _Recurrent:
        """Load from a torch.nn RNN/LSTM/GRU (layer ``layer``, ``suffix='_reverse'`` for the
        backward direction) or from the matching ``*Cell``."""
        names = dict(module.named_parameters())
        tag = "" if "weight_ih" in names else f"_l{layer}{suffix}"
        if f"weight_hr{tag}" in names:
            raise ValueError("the reference implementation does not support proj_size")
        return self.load(
            names[f"weight_ih{tag}"],
            names[f"weight_hh{tag}"],
            names.get(f"bias_ih{tag}"),
            names.get(f"bias_hh{tag}"),
        )

    # ---- state --------------------------------------------------------------------------
    def reset(self, batch_size: int = 1, h0=None, c0=None) -> None:
        """Zero (or set) the state and forget the recorded history."""
        H = self.hidden_size
        self.h = np.zeros((batch_size, H), self.dtype) if h0 is None else _to_numpy(h0, self.dtype)
        if self.has_cell:
            self.c = (
                np.zeros((batch_size, H), self.dtype) if c0 is None else _to_numpy(c0, self.dtype)
            )
        self.history = []

    def _linear(self, x, h):
        """The two projections, each with its bias: [B, G*H] and [B, G*H]."""
        return x @ self.w_ih.T + self.b_ih, h @ self.w_hh.T + self.b_hh

    def step(self, x) -> np.ndarray:
        """Advance one time step with input x ([B, I] or [I]); returns the new h."""
        x = _to_numpy(x, self.dtype)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None]
        if self.h is None or self.h.shape[0] != x.shape[0]:
            if self.history:
                raise ValueError("batch size changed mid-sequence; call reset() first")
            self.reset(x.shape[0])
        rec = self._step(x)
        self.history.append(rec)
        self.h, self.c = rec.h, rec.c
        return rec.h[0] if squeeze else rec.h

    def forward(self, xs, h0=None, c0=None):
        """Run a whole sequence xs [T, B, I] from h0 (and c0); returns (outputs [T, B, H],
        h_T) for RNN/GRU and (outputs, h_T, c_T) for the LSTM. Resets the history first."""
        xs = _to_numpy(xs, self.dtype)
        self.reset(xs.shape[1], h0, c0)
        outs = (
            np.stack([self.step(x) for x in xs])
            if len(xs)
            else np.zeros((0, xs.shape[1], self.hidden_size), self.dtype)
        )
        if self.has_cell:
            return outs, self.h, self.c
        return outs, self.h

    __call__ = forward

    def gate_trace(self, name: str) -> np.ndarray:
        """One recorded quantity over time, [T, B, H]: a gate name from ``gate_names``,
        ``'h'`` or (LSTM) ``'c'``."""
        if name == "h":
            return np.stack([s.h for s in self.history])
        if name == "c" and self.has_cell:
            return np.stack([s.c for s in self.history])
        return np.stack([s.gates[name] for s in self.history])

    # ---- backpropagation through time --------------------------------------------------
    def backward(self, grad_outputs=None, grad_hn=None, grad_cn=None) -> dict[str, np.ndarray]:
        """BPTT over the recorded history for a loss L with dL/d outputs = ``grad_outputs``
        [T, B, H] and dL/d h_T = ``grad_hn`` (and dL/d c_T = ``grad_cn``).

        Returns gradients: ``input`` [T, B, I], ``h0`` (and ``c0``) and every weight
        (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``), plus ``hidden`` [T+1, B, H]:
        the total derivative dL/dh_k for k = 0..T (k = 0 is the initial state), the quantity
        the vanishing/exploding-gradient experiment measures.
        """
        T = len(self.history)
        if T == 0:
            raise ValueError("nothing to backpropagate: run forward first")
        B, H = self.history[0].h.shape
        zeros = np.zeros((B, H), self.dtype)
        go = (
            np.zeros((T, B, H), self.dtype)
            if grad_outputs is None
            else _to_numpy(grad_outputs, self.dtype)
        )
        dh = zeros.copy() if grad_hn is None else _to_numpy(grad_hn, self.dtype)
        dc = zeros.copy() if grad_cn is None else _to_numpy(grad_cn, self.dtype)
        grads = {k: np.zeros_like(v) for k, v in
                 {"weight_ih": self.w_ih, "weight_hh": self.w_hh,
                      "bias_ih": self.b_ih, "bias_hh": self.b_hh, **self._extra()}.items()}  # fmt: skip
        dxs = np.zeros((T, B, self.input_size), self.dtype)
        hidden = np.zeros((T + 1, B, H), self.dtype)
        for t in reversed(range(T)):
            dh = dh + go[t]  # total dL/dh_t: from the output at t and from step t+1
            hidden[t + 1] = dh
            dxs[t], dh, dc = self._step_backward(self.history[t], dh, dc, grads)
        hidden[0] = dh
        out = dict(input=dxs, h0=dh, hidden=hidden, **grads)
        if self.has_cell:
            out["c0"] = dc
        if not self.bias:
            for k in [k for k in out if k in ("bias_ih", "bias_hh", "layernorm_c_bias")]:
                del out[k]
        return out

    def _extra(self) -> dict[str, np.ndarray]:
        """Parameters beyond the two projections and their biases (the LayerNorm gains)."""
        return {}

    def _accumulate(self, grads, rec, d_ih, d_hh):
        """Weight/bias gradients of the two projections, the input and the previous h."""
        grads["weight_ih"] += d_ih.T @ rec.x
        grads["weight_hh"] += d_hh.T @ rec.h_prev
        grads["bias_ih"] += d_ih.sum(0)
        grads["bias_hh"] += d_hh.sum(0)
        return d_ih @ self.w_ih, d_hh @ self.w_hh

    def _step(self, x) -> _Step:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step_backward(self, rec, dh, dc, grads):  # pragma: no cover - abstract
        raise NotImplementedError


class ElmanRNN(_Recurrent):
    """Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh) with act = tanh or relu.

    Recorded per step: ``pre`` (the pre-activation) and ``h``.
    """

    n_gates = 1
    gate_names = ("pre",)

    def __init__(
        self, input_size, hidden_size, nonlinearity="tanh", bias=True, seed=0, dtype=np.float64
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, seed, dtype)

    def _step(self, x):
        a_i, a_h = self._linear(x, self.h)
        a = a_i + a_h
        h = np.tanh(a) if self.nonlinearity == "tanh" else np.maximum(a, 0.0)
        return _Step(x=x, h_prev=self.h, h=h, gates={"pre": a})

    def _step_backward(self, rec, dh, dc, grads):
        if self.nonlinearity == "tanh":
            da = dh * (1.0 - rec.h**2)  # tanh'(a) = 1 - tanh(a)^2
        else:
            da = dh * (rec.gates["pre"] > 0)
        dx, dh_prev = self._accumulate(grads, rec, da, da)
        return dx, dh_prev, dc


class LSTM(_Recurrent):
    """LSTM with torch.nn's gate order i, f, g, o (no peepholes, no projection).

    Recorded per step: ``input`` (i), ``forget`` (f), ``cell`` (g, the candidate),
    ``output`` (o), plus ``h`` and ``c``.
    """

    n_gates = 4
    has_cell = True
    gate_names = ("input", "forget", "cell", "output")

    def _step(self, x):
        a_i, a_h = self._linear(x, self.h)
        ai, af, ag, ao = np.split(a_i + a_h, 4, axis=1)
        i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
        c = f * self.c + i * g
        h = o * np.tanh(c)
        gates = {"input": i, "forget": f, "cell": g, "output": o}
        return _Step(x=x, h_prev=self.h, h=h, gates=gates, c_prev=self.c, c=c)

    def _step_backward(self, rec, dh, dc, grads):
        i, f, g, o = (rec.gates[k] for k in self.gate_names)
        tc = np.tanh(rec.c)
        dc = dc + dh * o * (1.0 - tc**2)  # total dL/dc_t
        da = np.concatenate(
            [
                dc * g * i * (1.0 - i),  # d pre-activation of i
                dc * rec.c_prev * f * (1.0 - f),  # f
                dc * i * (1.0 - g**2),  # g
                dh * tc * o * (1.0 - o),  # o
            ],
            axis=1,
        )
        dx, dh_prev = self._accumulate(grads, rec, da, da)
        return dx, dh_prev, dc * f


class GRU(_Recurrent):
    """GRU with torch.nn's gate order r, z, n; the reset gate multiplies (W_hn h + b_hn).

    Recorded per step: ``reset`` (r), ``update`` (z), ``new`` (n) and ``h``.
    """

    n_gates = 3
    gate_names = ("reset", "update", "new")

    def _step(self, x):
        a_i, a_h = self._linear(x, self.h)
        ir, iz, in_ = np.split(a_i, 3, axis=1)
        hr, hz, hn = np.split(a_h, 3, axis=1)
        r, z = sigmoid(ir + hr), sigmoid(iz + hz)
        n = np.tanh(in_ + r * hn)
        h = (1.0 - z) * n + z * self.h
        gates = {"reset": r, "update": z, "new": n, "hn": hn}
        return _Step(x=x, h_prev=self.h, h=h, gates=gates)

    def _step_backward(self, rec, dh, dc, grads):
        r, z, n, hn = (rec.gates[k] for k in ("reset", "update", "new", "hn"))
        dan = dh * (1.0 - z) * (1.0 - n**2)  # d pre-activation of n
        daz = dh * (rec.h_prev - n) * z * (1.0 - z)
        dar = dan * hn * r * (1.0 - r)
        d_ih = np.concatenate([dar, daz, dan], axis=1)
        d_hh = np.concatenate([dar, daz, dan * r], axis=1)
        dx, dh_prev = self._accumulate(grads, rec, d_ih, d_hh)
        return dx, dh_prev + dh * z, dc


# ---- LayerNorm LSTM / GRU ---------------------------------------------------------------------
LN_EPS = 1e-5


def layer_norm(v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LN(v; w) over the last dimension; returns (w * vhat, vhat, rstd) with
    vhat = (v - mean) * rstd and rstd = 1 / sqrt(biased var + 1e-5) (kept for backward)."""
    mean = v.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((v - mean) ** 2).mean(-1, keepdims=True) + LN_EPS)
    vhat = (v - mean) * rstd
    return w * vhat, vhat, rstd


def layer_norm_backward(dy, vhat, rstd, w, grad_w) -> np.ndarray:
    """dL/dv of y = LN(v; w) given dL/dy; adds dL/dw into ``grad_w``. With u = dy * w:
    dv = rstd * (u - mean(u) - vhat * mean(u * vhat)) (mean and variance both depend on v)."""
    grad_w += (dy * vhat).sum(0)
    u = dy * w
    return rstd * (u - u.mean(-1, keepdims=True) - vhat * (u * vhat).mean(-1, keepdims=True))


class _LayerNormMixin:
    """The LayerNorm gains (``ln_ih``, ``ln_hh`` [G*H], initialised to 1) and their loading;
    the pre-normalisation projections carry no bias (the biases are added after LN)."""

    ln_names = ("layernorm_ih_weight", "layernorm_hh_weight")

    def _init_ln(self) -> None:
        G, H = self.n_gates, self.hidden_size
        self.ln = {n: np.ones(H if "_c_" in n else G * H, self.dtype) for n in self.ln_names}
        if "layernorm_c_bias" in self.ln:
            self.ln["layernorm_c_bias"][:] = 0.0

    def parameters(self) -> dict[str, np.ndarray]:
        """torch's names (``weight_ih`` ..., ``layernorm_ih_weight`` ...), in the order of the
        fused module's ``parameters()``; ``layernorm_c_bias`` only with ``bias``."""
        p = super().parameters()
        p.update(self._extra())
        return p

    def _extra(self) -> dict[str, np.ndarray]:
        return {n: v for n, v in self.ln.items() if self.bias or n != "layernorm_c_bias"}

    def load_torch(self, module, layer: int = 0, suffix: str = ""):
        """As the base class, from a ``fusedrnn.LayerNorm*`` module or cell, gains included."""
        super().load_torch(module, layer, suffix)
        names = dict(module.named_parameters())
        tag = "" if "weight_ih" in names else f"_l{layer}{suffix}"
        self._init_ln()
        for n in self.ln:
            if n + tag in names:
                got = _to_numpy(names[n + tag], self.dtype)
                if got.shape != self.ln[n].shape:
                    raise ValueError(f"expected {n}{tag} {self.ln[n].shape}, got {got.shape}")
                self.ln[n] = got
        return self

    def _projections(self, x, h):
        """LN(x W_ih^T; ln_ih) and LN(h W_hh^T; ln_hh), each with (vhat, rstd) for backward."""
        return (
            layer_norm(x @ self.w_ih.T, self.ln["layernorm_ih_weight"]),
            layer_norm(h @ self.w_hh.T, self.ln["layernorm_hh_weight"]),
        )

    def _accumulate(self, grads, rec, d_ih, d_hh):
        """The base class's, through the LayerNorms: gradients of the biases (added after LN),
        both LayerNorms and both projections; d_ih, d_hh: dL/d(LN output + bias) per
        projection. Returns (dx, dh_prev)."""
        grads["bias_ih"] += d_ih.sum(0)
        grads["bias_hh"] += d_hh.sum(0)
        g = rec.gates
        dpi = layer_norm_backward(d_ih, g["ih_hat"], g["ih_rstd"], self.ln["layernorm_ih_weight"],
                                  grads["layernorm_ih_weight"])  # fmt: skip
        dph = layer_norm_backward(d_hh, g["hh_hat"], g["hh_rstd"], self.ln["layernorm_hh_weight"],
                                  grads["layernorm_hh_weight"])  # fmt: skip
        grads["weight_ih"] += dpi.T @ rec.x
        grads["weight_hh"] += dph.T @ rec.h_prev
        return dpi @ self.w_ih, dph @ self.w_hh


class LayerNormLSTM(_LayerNormMixin, LSTM):
    """LayerNorm LSTM (``fusedrnn.LayerNormLSTM``'s equations; see the module docstring):
    gains ``ln["layernorm_ih_weight"]``, ``ln["layernorm_hh_weight"]`` [4H], ``ln_c`` =
    ``ln["layernorm_c_weight"]`` and ``ln_c_b`` = ``ln["layernorm_c_bias"]`` [H].

    Recorded per step as :class:`LSTM` (``c`` is the carried, unnormalised state), plus
    ``c_norm`` = LN(c'; ln_c) + ln_c_b.
    """

    ln_names = ("layernorm_ih_weight", "layernorm_hh_weight", "layernorm_c_weight",
                "layernorm_c_bias")  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ln()

    def _step(self, x):
        (ni, ih_hat, ih_rstd), (nh, hh_hat, hh_rstd) = self._projections(x, self.h)
        ai, af, ag, ao = np.split(ni + nh + self.b_ih + self.b_hh, 4, axis=1)
        i, f, g, o = sigmoid(ai), sigmoid(af), np.tanh(ag), sigmoid(ao)
        c = f * self.c + i * g
        cn, c_hat, c_rstd = layer_norm(c, self.ln["layernorm_c_weight"])
        cn = cn + self.ln["layernorm_c_bias"] if self.bias else cn
        tc = np.tanh(cn)
        h = o * tc
        gates = {"input": i, "forget": f, "cell": g, "output": o, "c_norm": cn, "tanh_c": tc,
                 "ih_hat": ih_hat, "ih_rstd": ih_rstd, "hh_hat": hh_hat, "hh_rstd": hh_rstd,
                 "c_hat": c_hat, "c_rstd": c_rstd}  # fmt: skip
        return _Step(x=x, h_prev=self.h, h=h, gates=gates, c_prev=self.c, c=c)

    def _step_backward(self, rec, dh, dc, grads):
        i, f, g, o = (rec.gates[k] for k in self.gate_names)
        tc = rec.gates["tanh_c"]
        dcn = dh * o * (1.0 - tc**2)  # dL/d(LN(c') + ln_c_b)
        if self.bias:
            grads["layernorm_c_bias"] += dcn.sum(0)
        dc = dc + layer_norm_backward(dcn, rec.gates["c_hat"], rec.gates["c_rstd"],
                                      self.ln["layernorm_c_weight"],
                                      grads["layernorm_c_weight"])  # fmt: skip
        da = np.concatenate(
            [dc * g * i * (1.0 - i), dc * rec.c_prev * f * (1.0 - f), dc * i * (1.0 - g**2),
             dh * tc * o * (1.0 - o)],
            axis=1,
        )  # fmt: skip
        dx, dh_prev = self._accumulate(grads, rec, da, da)
        return dx, dh_prev, dc * f


class LayerNormGRU(_LayerNormMixin, GRU):
    """LayerNorm GRU (``fusedrnn.LayerNormGRU``'s equations; see the module docstring): gains
    ``ln["layernorm_ih_weight"]``, ``ln["layernorm_hh_weight"]`` [3H]. Recorded per step as
    :class:`GRU` (``hn`` is gh_n, the normalised recurrent part of the new gate)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ln()

    def _step(self, x):
        (ni, ih_hat, ih_rstd), (nh, hh_hat, hh_rstd) = self._projections(x, self.h)
        ir, iz, in_ = np.split(ni + self.b_ih, 3, axis=1)
        hr, hz, hn = np.split(nh + self.b_hh, 3, axis=1)
        r, z = sigmoid(ir + hr), sigmoid(iz + hz)
        n = np.tanh(in_ + r * hn)
        h = (1.0 - z) * n + z * self.h
        gates = {"reset": r, "update": z, "new": n, "hn": hn, "ih_hat": ih_hat,
                 "ih_rstd": ih_rstd, "hh_hat": hh_hat, "hh_rstd": hh_rstd}  # fmt: skip
        return _Step(x=x, h_prev=self.h, h=h, gates=gates)

    # backward: GRU._step_backward; its gate gradients go through the LayerNorms in _accumulate


def from_torch(module, layer: int = 0, suffix: str = "", dtype=np.float64) -> _Recurrent:
    """A NumPy reference carrying the weights of a torch.nn (or fusedrnn) RNN/LSTM/GRU, a
    fusedrnn LayerNormLSTM/GRU, or one of their cells: one layer and direction of it
    (``layer``, ``suffix='_reverse'``)."""
    kind = type(module).__name__.replace("Cell", "").removeprefix("Eager")
    classes = {"RNN": ElmanRNN, "LSTM": LSTM, "GRU": GRU, "LayerNormLSTM": LayerNormLSTM,
               "LayerNormGRU": LayerNormGRU}  # fmt: skip
    if kind not in classes:
        raise TypeError(
            "module: expected an RNN, LSTM, GRU, LayerNormLSTM or LayerNormGRU (or cell), got "
            f"{type(module).__name__}"
        )
    is_cell = not hasattr(module, "num_layers")
    layers = 1 if is_cell else module.num_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < layers:
        raise ValueError(f"layer: expected an int in [0, {layers}), got {layer!r}")
    if suffix not in ("", "_reverse") or (
        suffix and (is_cell or not getattr(module, "bidirectional", False))
    ):
        raise ValueError(
            f"suffix: expected '' or, for a bidirectional module, '_reverse'; got {suffix!r}"
        )
    H = module.hidden_size
    I = (
        module.input_size
        if layer == 0
        else H * (2 if getattr(module, "bidirectional", False) else 1)
    )
    kw = {"nonlinearity": getattr(module, "nonlinearity", "tanh")} if kind == "RNN" else {}
    ref = classes[kind](I, H, dtype=dtype, **kw)
    return ref.load_torch(module, layer, suffix)

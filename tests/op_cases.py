"""Helpers shared by the tests: the families, packed-sequence lengths, relative errors, fresh
processes, and random arguments for the fused layer/cell ops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

import fusedrnn
import fusedrnn.reference_torch as ref

FAMILIES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def lengths_for(B: int, T: int) -> list[int]:
    """Distinct, sorted-descending lengths in [1, T] with the first equal to T."""
    if T == 0:
        return [0] * B
    return [max(1, T - (i * T) // max(B, 1)) for i in range(B)]


def batch_sizes_for(lengths: list[int]) -> torch.Tensor:
    T = max(lengths) if lengths else 0
    return torch.tensor([sum(1 for n in lengths if n > t) for t in range(T)], dtype=torch.long)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| in float64: the error of a relative to the reference b."""
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def cpu_has(cap: str) -> bool:
    """Whether this CPU runs ATen's ``cap`` table ("avx2" or "avx512", /proc/cpuinfo flags)."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return {"avx2": " avx2 ", "avx512": " avx512f "}[cap] in flags.replace("\n", " ")


def ln_module(fam, I, H, L=1, bidir=False, bias=True, dropout=0.0, batch_first=False,
              dtype=torch.float64, seed=0):  # fmt: skip
    """A fusedrnn.LayerNormLSTM ("ln_lstm") / LayerNormGRU ("ln_gru") with its LayerNorm
    weights moved away from their initial 1 / 0, so that they matter."""
    torch.manual_seed(seed)
    cls = {"ln_lstm": fusedrnn.LayerNormLSTM, "ln_gru": fusedrnn.LayerNormGRU}[fam]
    m = cls(I, H, num_layers=L, bidirectional=bidir, bias=bias, dropout=dropout,
            batch_first=batch_first, dtype=dtype)  # fmt: skip
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.startswith("layernorm_"):
                p.add_(0.3 * torch.randn_like(p))
    return m


def run_script(script: str, env: dict[str, str], timeout: float) -> dict:
    """Runs `python -c script` in a fresh process with env (for settings read once per
    process) and tests/ importable (`from op_cases import rel_err`); returns the JSON object
    of its last output line."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (tests_dir, env.get("PYTHONPATH")) if p)
    env = dict(env, PYTHONPATH=path)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@dataclass
class LayerCase:
    family: str
    input: torch.Tensor
    weights: dict  # w_ih, w_hh, b_ih, b_hh, w_hr
    h0: torch.Tensor | None
    c0: torch.Tensor | None
    batch_sizes: torch.Tensor | None
    reverse: bool

    def kwargs(self):
        kw = dict(h0=self.h0, batch_sizes=self.batch_sizes, reverse=self.reverse)
        if self.family == "lstm":
            kw["c0"] = self.c0
            kw["w_hr"] = self.weights["w_hr"]
        if self.family.startswith("rnn"):
            kw["nonlinearity"] = self.family.split("_")[1]
        return kw

    def args(self):
        w = self.weights
        return (self.input, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])

    def run(self, impl=fusedrnn):
        fam = "rnn" if self.family.startswith("rnn") else self.family
        out = getattr(impl, f"{fam}_layer")(*self.args(), **self.kwargs())
        return tuple(out)

    def run_ref(self):
        return self.run(ref)

    def differentiable(self):
        ts = [self.input, *self.weights.values(), self.h0, self.c0]
        return [t for t in ts if t is not None and t.requires_grad]


def make_layer_case(family, B, T, I, H, *, bias=True, proj=0, packed=False, h0=False,
                    reverse=False, dtype=torch.float64, requires_grad=True,
                    scale=0.5) -> LayerCase:  # fmt: skip
    G = GATES[family]
    P = proj or H

    def rnd(*shape):
        return (torch.randn(*shape, dtype=dtype) * scale).requires_grad_(requires_grad)

    weights = {
        "w_ih": rnd(G * H, I),
        "w_hh": rnd(G * H, P),
        "b_ih": rnd(G * H) if bias else None,
        "b_hh": rnd(G * H) if bias else None,
        "w_hr": rnd(P, H) if proj else None,
    }
    batch_sizes = None
    if packed:
        batch_sizes = batch_sizes_for(lengths_for(B, T))
        x = rnd(int(batch_sizes.sum()), I)
    else:
        x = rnd(T, B, I)
    return LayerCase(
        family,
        x,
        weights,
        rnd(B, P) if h0 else None,
        rnd(B, H) if (h0 and family == "lstm") else None,
        batch_sizes,
        reverse,
    )

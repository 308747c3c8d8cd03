"""Training sequence models by backpropagation through time.

Model
    :class:`SequenceRegressor` — a stacked RNN/LSTM/GRU and a linear head. ``impl="fused"``
    builds it on ``fusedrnn.RNN/LSTM/GRU``, ``impl="torch"`` on ``torch.nn.RNN/LSTM/GRU``: same
    parameters, same state_dict, so the two can be compared on equal terms. The LayerNorm cells
    ``lnlstm`` / ``lngru`` build ``fusedrnn.LayerNormLSTM/GRU`` (fused) or, as torch.nn has none,
    their eager twins (``torch``: a Python loop of torch ops, ``fusedrnn.layernorm_eager``).

Data (numpy or torch, float32)
    :class:`Windows` ``x [M, T, F]``, ``y [M, O]`` (predict after the last step) or
    ``y [M, T, O]`` (predict at every step): trained by full BPTT through each window.
    :class:`Stream` ``x [N, F]`` or ``[B, N, F]``, ``y`` likewise: one long series (cut into
    ``batch_size`` parallel streams) trained by truncated BPTT(k1, k2), stateful: the hidden
    state is carried across chunks and detached at their boundaries. Its loss counts from step
    ``start`` on, so a validation stream can run over the training span first as context.

Trainer
    :func:`fit` / :class:`Trainer`: Adam or SGD with momentum, MSE or Huber, gradient-norm
    clipping, early stopping that restores the best weights, tqdm progress, per-epoch
    :class:`History`, seeded reproducibility, atomic checkpoints (temp file + rename) that carry
    their config and load with ``weights_only=True``, and resume.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import nn

from ._atomic import write_atomic

__all__ = [
    "History",
    "SequenceRegressor",
    "Stream",
    "TrainConfig",
    "Trainer",
    "Windows",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "recurrent_class",
    "save_checkpoint",
    "set_seed",
]

CELLS = ("rnn", "lstm", "gru", "lnlstm", "lngru")
IMPLS = ("fused", "torch")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def recurrent_class(cell: str, impl: str = "fused") -> type[nn.Module]:
    """The recurrent layer class: fusedrnn.RNN/LSTM/GRU (fused) or torch.nn's (torch); for
    lnlstm / lngru fusedrnn.LayerNormLSTM/GRU (fused) or their eager twins (torch)."""
    names = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "lnlstm": "LayerNormLSTM",
             "lngru": "LayerNormGRU"}  # fmt: skip
    if cell not in names:
        raise ValueError(f"cell: {cell!r} is not one of {', '.join(CELLS)}")
    if impl == "torch" and cell.startswith("ln"):
        from fusedrnn import layernorm_eager

        return getattr(layernorm_eager, "Eager" + names[cell])
    if impl == "torch":
        return getattr(nn, names[cell])
    if impl == "fused":
        import fusedrnn

        return getattr(fusedrnn, names[cell])
    raise ValueError(f"impl: {impl!r} is not one of {', '.join(IMPLS)}")


class SequenceRegressor(nn.Module):
    """Stacked recurrent layers (batch-first) and a linear head on the top layer's output.

    ``forward(x [B, T, F], state=None, all_steps=False)`` returns ``(y, state)`` with
    ``y [B, O]`` from the last step, or ``[B, T, O]`` from every step when `all_steps`.
    With ``residual=True`` (the default) the head predicts a change: every output is
    ``x_t[0] + head(h_t)`` (feature 0, e.g. the scaled close, plus a learned correction), and
    the head starts at zero, so the untrained model is the naive "next = last" forecaster for
    every horizon and training learns the correction (a series that leaves its training range
    then needs no extrapolated level). ``residual=False``: the head predicts the level.
    ``config`` holds the constructor arguments (saved in checkpoints).
    """

    def __init__(
        self,
        cell: str = "lstm",
        input_size: int = 1,
        hidden_size: int = 64,
        num_layers: int = 2,
        output_size: int = 1,
        dropout: float = 0.2,
        impl: str = "fused",
        nonlinearity: str = "tanh",
        residual: bool = True,
    ):
        super().__init__()
        if (
            not isinstance(output_size, numbers.Integral)
            or isinstance(output_size, bool)
            or output_size < 1
        ):
            # (nn.Linear takes 0 features, and the model would train on an empty loss)
            raise ValueError(f"output_size: expected an integer >= 1, got {output_size!r}")
        self.config = dict(
            cell=cell,
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            output_size=output_size,
            dropout=dropout,
            impl=impl,
            nonlinearity=nonlinearity,
            residual=residual,
        )
        kwargs = dict(
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if cell == "rnn":
            kwargs["nonlinearity"] = nonlinearity
        self.rnn = recurrent_class(cell, impl)(**kwargs)
        self.head = nn.Linear(hidden_size, output_size)
        self.residual = residual
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, state=None, all_steps: bool = False):
        out, state = self.rnn(x, state)
        y = self.head(out if all_steps else out[:, -1])
        if self.residual:
            y = y + (x[..., :1] if all_steps else x[:, -1, :1])
        return y, state


# --------------------------------------------------------------------------------------------
# Data holders
# --------------------------------------------------------------------------------------------


def _tensor(a) -> torch.Tensor:
    """Floating data as it is (fit and predict cast it to the model's dtype), other real data
    as float32; complex data is refused, not truncated."""
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    if t.is_complex():
        raise TypeError(f"expected real data, got {t.dtype}")
    return t if t.is_floating_point() else t.float()


def _check_finite(what: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """NaN or inf in the data would train on (a NaN validation loss never improves, a NaN
    training loss shows only after an epoch): refused up front, naming where."""
    for name, t in (("x", x), ("y", y)):
        bad = ~torch.isfinite(t)
        if bad.any():
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{what}.{name}: NaN or inf at index {first}")


def _moved(holder, device, dtype):
    """A copy of a checked Windows / Stream on `device` in `dtype`, without checking the
    data again (fit moves its holders once per call)."""
    out = copy.copy(holder)
    out.x, out.y = holder.x.to(device, dtype), holder.y.to(device, dtype)
    return out


@dataclass
class Windows:
    """Independent windows for full BPTT: ``x [M, T, F]``; ``y [M, O]`` or ``[M, T, O]``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        self.x, self.y = _tensor(self.x), _tensor(self.y)
        if self.x.dim() != 3:
            raise ValueError(f"Windows.x: expected [M, T, F], got {tuple(self.x.shape)}")
        if self.y.dim() not in (2, 3) or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"Windows.y: expected [M, O] or [M, T, O] with M={self.x.shape[0]}, "
                f"got {tuple(self.y.shape)}"
            )
        if len(self.x) == 0:
            raise ValueError("Windows: no windows")
        _check_finite("Windows", self.x, self.y)

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device, dtype=None) -> Windows:
        return _moved(self, device, dtype)


@dataclass
class Stream:
    """One long series for truncated BPTT: ``x [N, F]`` / ``y [N, O]`` (or ``[B, N, ...]``
    already cut into B parallel streams). Loss counts from step `start` on."""

    x: torch.Tensor
    y: torch.Tensor
    start: int = 0

    def __post_init__(self):
        self.x, self.y = _tensor(self.x), _tensor(self.y)
        if self.x.dim() == 2:
            self.x, self.y = self.x[None], self.y[None]
        if self.x.dim() != 3 or self.y.dim() != 3 or self.x.shape[:2] != self.y.shape[:2]:
            raise ValueError(
                f"Stream: x [N, F] / y [N, O] (or [B, N, ...]) expected, got "
                f"{tuple(self.x.shape)} / {tuple(self.y.shape)}"
            )
        if self.x.shape[1] == 0:
            raise ValueError("Stream: no steps")
        if not 0 <= self.start < self.x.shape[1]:
            raise ValueError(f"Stream.start: {self.start} outside [0, {self.x.shape[1]})")
        _check_finite("Stream", self.x, self.y)

    def to(self, device, dtype=None) -> Stream:
        return _moved(self, device, dtype)

    def streams(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut a single series into `batch` contiguous streams ``[B, N // B, ...]``."""
        if self.x.shape[0] != 1 or batch <= 1:
            return self.x, self.y
        if self.start:
            raise ValueError("Stream: start must be 0 when one series is cut into streams")
        n = self.x.shape[1] // batch
        if n < 1:
            raise ValueError(f"Stream: {self.x.shape[1]} steps cannot make {batch} streams")
        cut = lambda a: a[0, : n * batch].reshape(batch, n, a.shape[-1])  # noqa: E731
        return cut(self.x), cut(self.y)


# --------------------------------------------------------------------------------------------
# Config, history, checkpoints
# --------------------------------------------------------------------------------------------


# TrainConfig fields a resumed run may change (how long, and how it is shown); the others,
# how it trains, must match the checkpoint's.
RESUME_FREE = ("epochs", "patience", "min_delta", "progress", "desc", "checkpoint")


@dataclass
class TrainConfig:
    """How to train. Defaults are the stock job's."""

    epochs: int = 100  # most passes over the training data (early stopping may end sooner)
    batch_size: int = 32  # windows per step (full BPTT) or parallel streams (truncated BPTT)
    lr: float = 1e-3  # learning rate
    optimizer: str = "adam"  # "adam" or "sgd" (with `momentum`)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # L2 penalty (both optimizers)
    loss: str = "mse"  # "mse" or "huber"
    huber_delta: float = 1.0  # Huber: quadratic below this error, linear above
    clip_grad_norm: float | None = 1.0  # max global gradient norm per step; None/0 = off
    patience: int | None = 10  # early stopping: epochs without validation gain; None = off
    min_delta: float = 0.0  # validation loss must fall by more than this to count as a gain
    bptt: str = "full"  # "full" (through each window) or "truncated" (stateful, k1/k2)
    k1: int = 20  # truncated BPTT: steps forward between updates
    k2: int = 20  # truncated BPTT: steps backpropagated per update (k2 >= k1)
    shuffle: bool = True  # full BPTT: shuffle windows every epoch
    eval_batch_size: int = 1024  # windows per forward when evaluating
    seed: int = 0  # seeds torch, numpy, random and the shuffling
    progress: bool | None = None  # tqdm bar; None = only when stderr is a terminal
    checkpoint: str | None = None  # write a checkpoint here after every epoch (atomically)
    desc: str = "train"  # progress-bar label

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: {self.optimizer!r} is not 'adam' or 'sgd'")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"loss: {self.loss!r} is not 'mse' or 'huber'")
        if self.bptt not in ("full", "truncated"):
            raise ValueError(f"bptt: {self.bptt!r} is not 'full' or 'truncated'")
        if not 1 <= self.k1 <= self.k2:
            raise ValueError(f"truncated BPTT needs 1 <= k1 <= k2, got k1={self.k1} k2={self.k2}")
        for name in ("epochs", "batch_size", "eval_batch_size", "k1", "k2", "seed"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                raise TypeError(f"{name}: expected an integer, got {v!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs must be >= 0, batch_size and eval_batch_size >= 1")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed: {self.seed} must be in [0, 2**63)")
        if not (math.isfinite(self.huber_delta) and self.huber_delta > 0):
            raise ValueError(f"huber_delta: {self.huber_delta} must be a finite number > 0")
        # a negative clip flips the gradients, patience 0 stops after one epoch, a NaN rate
        # trains nothing: all silently wrong, so refused here
        if not isinstance(self.lr, numbers.Real) or isinstance(self.lr, bool):
            raise TypeError(f"lr: expected a number, got {self.lr!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: {self.lr} must be a finite number > 0")
        if self.clip_grad_norm is not None and not (
            math.isfinite(self.clip_grad_norm) and self.clip_grad_norm >= 0
        ):
            raise ValueError(f"clip_grad_norm: {self.clip_grad_norm} must be >= 0 (0/None: off)")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience: {self.patience} must be >= 1 (None: off)")
        if not (0 <= self.momentum < 1 and self.weight_decay >= 0 and self.min_delta >= 0):
            raise ValueError("momentum must be in [0, 1), weight_decay and min_delta >= 0")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class History:
    """Per-epoch record of a run."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # mean pre-clipping norm per epoch
    epoch_time: list[float] = field(default_factory=list)  # seconds of training per epoch
    best_epoch: int = -1  # 0-based epoch whose weights were kept
    best_val: float = math.inf
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def train_time(self) -> float:
        return float(sum(self.epoch_time))


def adam(params, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused implementation (one kernel per parameter) where
    torch has one for these parameters (CPU and CUDA, float32 / float64), else the default
    (a Python loop of small ops per parameter). At the main job's size the default step was
    ~0.5 ms of a ~2.6 ms batch; fused, epochs run 5-10% faster for both implementations."""
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
        return torch.optim.Adam(params, **kwargs)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path, payload: dict) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous checkpoint untouched (and no temp file behind).
    """
    write_atomic(path, lambda tmp: torch.save(payload, tmp), fsync=True)


def load_checkpoint(path) -> dict:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _state_copy(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Trains `model` with `config`; ``fit(train, val)`` returns the :class:`History`."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None):
        self.model = model
        self.config = config or TrainConfig()
        c = self.config
        set_seed(c.seed)
        if c.optimizer == "adam":
            self.optimizer = adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(
                model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        if c.loss == "mse":
            self.loss_fn = nn.MSELoss()
        else:
            self.loss_fn = nn.HuberLoss(delta=c.huber_delta)
        self.generator = torch.Generator().manual_seed(c.seed)  # window shuffling
        self.history = History()
        self.best_state: dict | None = None
        # The last epoch's weights while the model holds the best ones (after fit): what a
        # checkpoint and a further fit continue from, as an uninterrupted run would.
        self.last_state: dict | None = None
        self.bad_epochs = 0
        self.epoch = 0  # epochs done
        self.meta: dict = {}  # saved with checkpoints (e.g. the data pipeline and provenance)

    # ---- one epoch ---------------------------------------------------------------------

    def _loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss, after a shape check: a mismatch (say output_size 3 against [M, 1]
        targets) would broadcast into a wrong loss with only torch's warning."""
        if pred.shape != y.shape:
            raise ValueError(
                f"the model's predictions {tuple(pred.shape)} do not match the targets "
                f"{tuple(y.shape)} (check the model's output size against y)"
            )
        return self.loss_fn(pred, y)

    def _step(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.clip_grad_norm
        params = [p for p in self.model.parameters() if p.grad is not None]
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        self.optimizer.step()
        return float(norm)

    def _epoch_full(self, data: Windows, bar) -> tuple[float, float]:
        n, bs = len(data), self.config.batch_size
        order = (
            torch.randperm(n, generator=self.generator) if self.config.shuffle else torch.arange(n)
        )
        all_steps = data.y.dim() == 3
        total, norms = 0.0, []
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            pred, _ = self.model(data.x[idx], all_steps=all_steps)
            loss = self._loss(pred, data.y[idx])
            norms.append(self._step(loss))
            total += loss.item() * len(idx)
            bar.update(1)
        return total / n, float(np.mean(norms))

    def _epoch_truncated(self, data: Stream, bar) -> tuple[float, float]:
        """TBPTT(k1, k2): every k1 steps, backpropagate the loss of those k1 steps through the
        last k2 steps, starting from a detached state; the state carries across updates."""
        k1, k2 = self.config.k1, self.config.k2
        x, y = data.streams(self.config.batch_size)
        n = x.shape[1]
        saved = {0: None}  # detached states at the steps where a later window starts
        total, count, norms = 0.0, 0, []
        t = 0
        while t < n:
            t_end = min(t + k1, n)
            begin = max(0, t_end - k2)
            nxt_begin = max(0, min(t_end + k1, n) - k2)
            cuts = sorted({begin, t, t_end} | ({nxt_begin} if begin < nxt_begin < t_end else set()))
            state = saved[begin]
            outs = []
            for a, b in zip(cuts, cuts[1:]):
                out, state = self.model(x[:, a:b], state, all_steps=True)
                if b == nxt_begin:
                    saved[b] = _detach(state)
                if a >= t:
                    outs.append(out)
            saved = {k: v for k, v in saved.items() if k >= nxt_begin}
            if t_end == nxt_begin:
                saved[t_end] = _detach(state)
            lo = max(t, data.start)
            pred = torch.cat(outs, dim=1)[:, lo - t :]
            if pred.shape[1] > 0:
                loss = self._loss(pred, y[:, lo:t_end])
                norms.append(self._step(loss))
                total += loss.item() * pred.shape[1]
                count += pred.shape[1]
            bar.update(1)
            t = t_end
        return total / max(count, 1), float(np.mean(norms)) if norms else 0.0

    # ---- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, data: Windows | Stream | torch.Tensor) -> torch.Tensor:
        """Predictions in eval mode, on the model's device: ``[M, O]`` (or ``[M, T, O]``) for
        windows; ``[B, N, O]`` over a whole stream from a zero state."""
        was = self.model.training
        self.model.eval()
        try:
            dev, dt = self._device(), self._dtype()
            if isinstance(data, Stream):
                return self.model(data.x.to(dev, dt), all_steps=True)[0]
            x = (data.x if isinstance(data, Windows) else _tensor(data)).to(dev, dt)
            all_steps = isinstance(data, Windows) and data.y.dim() == 3
            bs = self.config.eval_batch_size
            outs = [self.model(x[i : i + bs], all_steps=all_steps)[0] for i in range(0, len(x), bs)]
            return torch.cat(outs)
        finally:
            self.model.train(was)

    def evaluate(self, data: Windows | Stream) -> float:
        """Mean loss (the training loss function) in eval mode."""
        pred = self.predict(data)
        if isinstance(data, Stream):
            y = data.y.to(pred.device, pred.dtype)
            return float(self._loss(pred[:, data.start :], y[:, data.start :]))
        return float(self._loss(pred, data.y.to(pred.device, pred.dtype)))

    def _device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None)
        return p.dtype if p is not None and p.is_floating_point() else torch.float32

    # ---- the loop -----------------------------------------------------------------------

    def fit(self, train: Windows | Stream, val: Windows | Stream | None = None) -> History:
        c = self.config
        if c.bptt == "full" and not isinstance(train, Windows):
            raise TypeError("bptt='full' trains on Windows (x [M, T, F], y [M, O])")
        if c.bptt == "truncated" and not isinstance(train, Stream):
            raise TypeError("bptt='truncated' trains on a Stream (x [N, F], y [N, O])")
        if self.last_state is not None:  # a further fit goes on from the last epoch
            self.model.load_state_dict(self.last_state)
            self.last_state = None
        # once, not per batch; in the model's dtype
        dev, dt = self._device(), self._dtype()
        train = train.to(dev, dt)
        val = val.to(dev, dt) if val is not None else None
        if c.bptt == "full":
            steps = math.ceil(len(train) / c.batch_size)
        else:
            steps = math.ceil(train.streams(c.batch_size)[0].shape[1] / c.k1)
        show = sys.stderr.isatty() if c.progress is None else c.progress
        from tqdm import tqdm

        bar = tqdm(
            total=steps * max(c.epochs - self.epoch, 0),
            desc=c.desc,
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        try:
            while self.epoch < c.epochs:
                self.model.train()
                t0 = time.perf_counter()
                if c.bptt == "full":
                    loss, norm = self._epoch_full(train, bar)
                else:
                    loss, norm = self._epoch_truncated(train, bar)
                h = self.history
                h.epoch_time.append(time.perf_counter() - t0)
                h.train_loss.append(loss)
                h.grad_norm.append(norm)
                val_loss = self.evaluate(val) if val is not None else loss
                h.val_loss.append(val_loss)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss} at epoch {self.epoch}")
                if val_loss < h.best_val - c.min_delta or self.best_state is None:
                    h.best_val, h.best_epoch = val_loss, self.epoch
                    self.best_state = _state_copy(self.model)
                    self.bad_epochs = 0
                else:
                    self.bad_epochs += 1
                self.epoch += 1
                bar.set_postfix(loss=f"{loss:.4g}", val=f"{val_loss:.4g}", refresh=False)
                stop = c.patience is not None and self.bad_epochs >= c.patience
                if stop:
                    h.stopped_early = True
                if c.checkpoint:
                    self.save(c.checkpoint)
                if stop:
                    break
        finally:
            bar.close()
        if self.best_state is not None and val is not None:
            self.last_state = _state_copy(self.model)
            self.model.load_state_dict(self.best_state)  # early stopping keeps the best weights
        return self.history

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "format": "fusedrnn.train/1",
            "config": asdict(self.config),
            "model_config": dict(getattr(self.model, "config", {})),
            "model": self.last_state if self.last_state is not None else self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "epoch": self.epoch,
            "history": asdict(self.history),
            "meta": self.meta,
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": self.generator.get_state(),
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_pos": int(np.random.get_state()[2]),
                "python": list(random.getstate()[1]),
            },
        }

    def save(self, path) -> None:
        save_checkpoint(path, self.state_dict())

    def load_state_dict(self, ckpt: dict) -> None:
        """Continue from `ckpt` (a :meth:`state_dict`): its settings must be this trainer's,
        but for those a continuation may change (:data:`RESUME_FREE`); another optimizer's
        state would load into this one's, and its rate replace the config's, silently."""
        saved = ckpt.get("config", {})
        mine = asdict(self.config)
        diff = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in mine.items()
                if k not in RESUME_FREE and k in saved and saved[k] != v]  # fmt: skip
        if diff:
            raise ValueError(f"the checkpoint was trained with other settings: {'; '.join(diff)}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.best_state = ckpt["best_state"]
        self.last_state = None
        self.bad_epochs = int(ckpt["bad_epochs"])
        self.epoch = int(ckpt["epoch"])
        self.history = History(**ckpt["history"])
        self.meta = ckpt.get("meta", {})
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["shuffle"])
        keys = rng["numpy"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, rng["numpy_pos"], 0, 0.0))
        random.setstate((3, tuple(rng["python"]), None))

    def resume(self, path) -> None:
        """Continue from a checkpoint written by :meth:`save` (model, optimizer, RNGs, history)."""
        self.load_state_dict(load_checkpoint(path))


def fit(
    model: nn.Module,
    train: Windows | Stream,
    val: Windows | Stream | None = None,
    config: TrainConfig | None = None,
    resume: str | os.PathLike | None = None,
) -> History:
    """Train `model` in place (see :class:`Trainer`); returns its :class:`History`."""
    trainer = Trainer(model, config)
    if resume:
        trainer.resume(resume)
    return trainer.fit(train, val)


def model_from_checkpoint(ckpt: dict | str | os.PathLike, impl: str | None = None):
    """Rebuild a :class:`SequenceRegressor` from a checkpoint (its best weights if it has any)."""
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = dict(ckpt["model_config"])
    if impl:
        cfg["impl"] = impl
    model = SequenceRegressor(**cfg)
    model.load_state_dict(ckpt["best_state"] or ckpt["model"])
    return model

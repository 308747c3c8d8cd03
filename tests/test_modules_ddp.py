"""DistributedDataParallel (gloo, 2 processes on this machine) trains a fusedrnn model to the
same parameters as single-process training on the same global batch."""

from __future__ import annotations

import gc
import os
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fusedrnn

WORLD = 2
STEPS = 3
GLOBAL_B = 4


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = fusedrnn.LSTM(
            3, 6, num_layers=2, bidirectional=True, batch_first=True, proj_size=2
        )
        self.gru = fusedrnn.GRU(4, 5, batch_first=True)
        self.cell = fusedrnn.GRUCell(5, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, x):
        o, _ = self.lstm(x)
        o, h = self.gru(o)
        return self.head(self.cell(o[:, -1], h[0])).squeeze(-1)


def _data():
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(GLOBAL_B, 5, 3, generator=g, dtype=torch.float64) for _ in range(STEPS)]
    ys = [torch.randn(GLOBAL_B, generator=g, dtype=torch.float64) for _ in range(STEPS)]
    return xs, ys


def _model():
    torch.manual_seed(0)
    return Model().double()


def _train(model, xs, ys, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    per = GLOBAL_B // world
    for x, y in zip(xs, ys):
        sl = slice(rank * per, (rank + 1) * per)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x[sl]), y[sl])  # mean over the local batch
        loss.backward()
        opt.step()


def _worker(rank, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        ddp = nn.parallel.DistributedDataParallel(_model())
        xs, ys = _data()
        _train(ddp, xs, ys, rank, WORLD)
        if rank == 0:
            torch.save(ddp.module.state_dict(), out_file)
        # An orderly teardown: neither rank closes its gloo pairs while the other still uses
        # them, and the DDP reducer (which holds the process group) goes before the group, so
        # gloo's threads are joined here and not during interpreter shutdown. CI once saw a
        # worker abort ("terminate called without an active exception") in that shutdown.
        dist.barrier()
        del ddp
        gc.collect()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_ddp_matches_single_process():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        out_file = os.path.join(tmp, "ddp.pt")
        ctx = mp.spawn(_worker, args=(init_file, out_file), nprocs=WORLD, join=False)
        deadline = time.monotonic() + 300  # never hang the suite on a stuck worker
        while not ctx.join(timeout=2):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                pytest.fail("DDP workers did not finish in 300 s")
        ddp_state = torch.load(out_file, weights_only=True)

    single = _model()
    start = {k: v.clone() for k, v in single.state_dict().items()}
    xs, ys = _data()
    _train(single, xs, ys)
    assert list(ddp_state) == list(single.state_dict())
    for name, p in single.state_dict().items():
        assert not torch.equal(p, start[name]), f"{name} did not train"
        torch.testing.assert_close(ddp_state[name], p, rtol=1e-10, atol=1e-12, msg=name)

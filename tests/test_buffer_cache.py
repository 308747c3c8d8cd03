"""The CPU buffer cache (cpp/buffers.cpp): repeated steps reuse blocks instead of faulting fresh
pages, results do not depend on it, torch.profiler still sees the buffers, and its limit,
environment variable, threads and fork behave."""

import os
import resource
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import fusedrnn
from fusedrnn.bench.measure import peak_step_bytes


@pytest.fixture(autouse=True)
def default_limit():
    limit = fusedrnn.cpu_cache_info()["limit_bytes"]
    yield
    fusedrnn.set_cpu_cache_limit(limit)


def model(cell, seed=0, **kw):
    torch.manual_seed(seed)
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return fusedrnn.convert(cls(3, 64, num_layers=2, **kw))


def train_step(m, x, seed=1):
    for p in m.parameters():
        p.grad = None
    torch.manual_seed(seed)  # the dropout masks
    out, _ = m(x)
    out.pow(2).sum().backward()
    return [out.detach().clone()] + [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("kw", [{}, {"bidirectional": True, "dropout": 0.3}])
def test_repeated_steps_reuse_blocks_and_match_uncached(cell, kw):
    x = torch.randn(30, 32, 3)
    m = model(cell, **kw)
    fusedrnn.empty_cpu_cache()
    first = train_step(m, x)
    warm = train_step(m, x)
    before = fusedrnn.cpu_cache_info()
    assert before["cached_bytes"] > 0 and before["cached_blocks"] > 0
    for _ in range(3):
        again = train_step(m, x)
    after = fusedrnn.cpu_cache_info()
    assert after["misses"] == before["misses"], "a repeated step allocated a new block"
    assert after["hits"] > before["hits"]
    fusedrnn.set_cpu_cache_limit(0)
    assert fusedrnn.cpu_cache_info()["cached_bytes"] == 0
    uncached = train_step(m, x)
    assert fusedrnn.cpu_cache_info()["hits"] == after["hits"], "limit 0 still served a block"
    for a, b, c, d in zip(first, warm, again, uncached):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


@pytest.mark.parametrize(
    "cell, shape, loss",
    [
        ("lstm", (30, 32, 3, 64), "square"),
        ("gru", (30, 32, 3, 64), "square"),
        # sum(): the output gradient arrives expanded, and the op copies it (3 MB here).
        ("lstm", (50, 64, 32, 256), "sum"),
        ("gru", (50, 64, 32, 256), "sum"),
    ],
)
def test_repeated_training_steps_do_not_page_fault(cell, shape, loss):
    # Before the cache, glibc returned the freed heap top to the kernel after each step and
    # the next step faulted it in again: ~300 minor faults a step at the first shape (LSTM),
    # ~700 (GRU); at the second, up to 1600 on some steps from the gradient's copy alone.
    T, B, I, H = shape
    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    m = fusedrnn.convert(cls(I, H, num_layers=2))
    x = torch.randn(T, B, I)

    def step():
        for p in m.parameters():
            p.grad = None
        out, _ = m(x)
        (out.pow(2).sum() if loss == "square" else out.sum()).backward()

    for _ in range(5):
        step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 20
    assert faults < 40, f"{cell} {shape}: {faults:.0f} minor page faults a training step"


def test_profiler_sees_cached_buffers_as_held_only_while_used():
    x = torch.randn(30, 32, 3)
    m = model("lstm")
    train_step(m, x)
    impl = SimpleNamespace(module=m)

    def step():
        train_step(m, x)

    peak_cached = peak_step_bytes(impl, step)
    fusedrnn.set_cpu_cache_limit(0)
    peak_plain = peak_step_bytes(impl, step)
    # Unreported releases would add up past the uncached peak; blocks are reported at their
    # size, at most 1/8 above the request.
    assert peak_plain <= peak_cached <= peak_plain * 1.13


def test_concurrent_steps_in_threads_match_serial():
    x = torch.randn(20, 8, 3)
    models = [model("gru", seed=s) for s in range(4)]
    serial = [train_step(m, x) for m in models]
    results = [None] * 4

    def run(i):
        for _ in range(5):
            results[i] = train_step(models[i], x)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(serial, results):
        assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_limit_argument_is_checked():
    for bad in (-1, 2**63, 1.5, True, "1"):
        with pytest.raises(ValueError, match="limit_bytes"):
            fusedrnn.set_cpu_cache_limit(bad)


def run_child(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


CHILD = """
import torch, fusedrnn
m = fusedrnn.LSTM(3, 64, num_layers=2)
m(torch.randn(30, 32, 3))[0].sum().backward()
print(fusedrnn.cpu_cache_info()["limit_bytes"], fusedrnn.cpu_cache_info()["cached_bytes"])
"""


def test_environment_variable_sets_the_limit():
    r = run_child(CHILD, FUSEDRNN_CPU_CACHE_MB="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"]
    r = run_child(CHILD, FUSEDRNN_CPU_CACHE_MB="3")
    assert r.returncode == 0, r.stderr
    limit, cached = map(int, r.stdout.split())
    assert limit == 3 << 20 and 0 < cached <= limit
    for bad in ("lots", "-1", "99999999999999999"):
        r = run_child(CHILD, FUSEDRNN_CPU_CACHE_MB=bad)
        assert r.returncode != 0
        assert "FUSEDRNN_CPU_CACHE_MB" in r.stderr and f"'{bad}'" in r.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_uses_the_cache():
    x = torch.randn(30, 32, 3)
    m = model("lstm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child's count: GEMM sums split over threads differently
    try:
        want = train_step(m, x)
    finally:
        torch.set_num_threads(threads)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = False
        try:
            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive fork
            ok = all(torch.equal(a, b) for a, b in zip(want, train_step(m, x)))
        finally:
            os.write(w, b"1" if ok else b"0")
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(r)

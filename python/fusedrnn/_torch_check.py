"""Does the running torch match the one this build of fusedrnn was compiled against?

libtorch has no stable C++ ABI: an extension built for one torch release may fail to load with
another (undefined symbols) or, worse, load and misbehave. So ``import fusedrnn`` compares the
torch it runs with to the build's (``_build_config.py``, written at build time) before loading
the compiled extension. Local version labels (``+cpu``, ``+cu130``) name a variant of the same
release and may differ, except that CUDA kernels need a torch with CUDA of the same major version.
"""

from __future__ import annotations

import torch

REBUILD = "pip install --no-build-isolation --force-reinstall <fusedrnn source>"


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def _major(cuda_version: str | None) -> str:
    return (cuda_version or "").split(".", 1)[0]


def torch_mismatch(
    version: str,
    built_torch: str,
    built_torch_cuda: str,
    built_cuda: bool,
    torch_version: str,
    torch_cuda: str | None,
) -> str | None:
    """Why fusedrnn ``version`` (built against ``built_torch``; CUDA kernels if ``built_cuda``)
    cannot run with ``torch_version`` (``torch_cuda``: its torch.version.cuda), or None."""
    head = f"fusedrnn {version} was built against torch {built_torch}"
    if _public(built_torch) != _public(torch_version):
        return (
            f"{head}, but torch {torch_version} is installed; its compiled kernels load only "
            f"with the torch release they were built for. Install torch=={_public(built_torch)}, "
            f"or rebuild fusedrnn for this torch: {REBUILD}"
        )
    if built_cuda and not torch_cuda:
        return (
            f"{head} with CUDA kernels, but torch {torch_version} has no CUDA. Install torch's "
            f"CUDA {built_torch_cuda} build, or rebuild fusedrnn without CUDA: "
            f"FUSEDRNN_CUDA=0 {REBUILD}"
        )
    if built_cuda and _major(torch_cuda) != _major(built_torch_cuda):
        return (
            f"{head} with CUDA {built_torch_cuda} kernels, but torch {torch_version} uses CUDA "
            f"{torch_cuda}. Install torch's CUDA {built_torch_cuda} build, or rebuild fusedrnn "
            f"for this torch: {REBUILD}"
        )
    return None


def check_build() -> None:
    """Raise a clear ImportError unless the running torch suits this build."""
    try:
        from . import _build_config as b
    except ImportError:
        raise ImportError(
            "fusedrnn's compiled extension is not built here (no fusedrnn/_build_config.py): "
            "install it with pip install --no-build-isolation <fusedrnn source> (or make "
            "setup in a checkout)"
        ) from None
    problem = torch_mismatch(
        b.VERSION, b.TORCH_VERSION, b.TORCH_CUDA, b.CUDA, torch.__version__, torch.version.cuda
    )
    if problem:
        raise ImportError(problem)

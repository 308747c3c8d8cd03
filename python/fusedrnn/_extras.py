"""Optional dependencies: which extra of ``pip install 'fusedrnn[EXTRA]'`` provides a module.

The core (``_C``, the ops, the modules, the references, ``check``) needs torch and numpy only;
the applications need the extras (pyproject.toml ``[project.optional-dependencies]``, which a
test keeps in step with this table).
"""

from __future__ import annotations

import importlib
import importlib.util

# extra -> the import names of its packages
EXTRAS: dict[str, tuple[str, ...]] = {
    "apps": ("pandas", "sklearn", "yfinance", "matplotlib", "tqdm"),
    "bench": ("numba",),
    "deploy": ("onnx", "onnxscript", "onnxruntime"),
}
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn"}
# Packages of an extra that a command can run without, so they are not checked up front:
# without yfinance, fusedrnn.data falls back to the cache / bundled prices (--source auto) or
# fails naming it (--source yfinance), as it does when the network is down.
OPTIONAL = frozenset({"yfinance"})
_EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}


def extra_of(module: str | None) -> str | None:
    """The extra that provides ``module`` (any dotted name inside it), or None."""
    return _EXTRA_OF.get((module or "").partition(".")[0])


def install_hint(module: str, extra: str) -> str:
    package = DISTRIBUTIONS.get(module, module)
    return f"needs {package}, from the '{extra}' extra: pip install 'fusedrnn[{extra}]'"


def first_missing(extras) -> tuple[str, str] | None:
    """(module, extra) for the first package of ``extras`` that is not installed, or None
    (packages in OPTIONAL are not required). Looks the packages up without importing them."""
    for extra in extras:
        for module in EXTRAS[extra]:
            if module not in OPTIONAL and importlib.util.find_spec(module) is None:
                return module, extra
    return None


def import_submodule(package: str, name: str):
    """``package.name``, imported; AttributeError when there is no such submodule, and a
    ModuleNotFoundError that names the extra to install when one of its packages is missing."""
    full = f"{package}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        extra = extra_of(e.name)
        if extra is None:
            raise
        top = e.name.partition(".")[0]
        raise ModuleNotFoundError(f"{full} {install_hint(top, extra)}", name=e.name) from e

"""Build hook (scikit-build-core dynamic metadata): the wheel requires the torch it is built for.

fusedrnn's compiled extension links libtorch, and libtorch has no stable C++ ABI: the binary
loads only with the torch release it was compiled against. So the wheel's dependencies pin that
release (``torch==2.13.0``, the public version, which ``2.13.0+cpu`` also satisfies), and the
torch is the one of the Python that runs the build. That is why fusedrnn is built without
build isolation, as flash-attn and torchvision are: under isolation (a plain ``pip install .``)
the build runs in a fresh environment without the user's torch, and it stops here, before
CMake runs, with the command to use instead.

Also: builds run parallel jobs by default (``CMAKE_BUILD_PARALLEL_LEVEL``, unless set), which
matters where no ninja is found and CMake falls back to make (serial by default).
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

BUILD_REQUIREMENTS = '"scikit-build-core>=1.0" "pybind11>=2.12" ninja "cmake>=3.25"'  # shell-quoted


def public_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the local label names the variant, not the release."""
    return version.split("+", 1)[0]


def isolated_build_message(python: str, source: str) -> str:
    return (
        "fusedrnn is compiled against the torch it will run with, but the Python running "
        f"this build ({python}) has no torch: pip's build isolation hides the packages of "
        "your environment.\nInstall torch (if it is not yet), then build without isolation:\n\n"
        f"    pip install {BUILD_REQUIREMENTS}\n"
        f"    pip install --no-build-isolation {source}\n"
    )


def _source_for_message() -> str:
    here = os.getcwd()
    # pip unpacks an sdist or a URL into a temporary folder: naming that would not help.
    unpacked = os.path.basename(here).startswith(("pip-req-build-", "pip-install-"))
    return "<the same source>" if unpacked else here


class Provider:
    """``[[tool.dynamic-metadata]]`` provider: sets ``dependencies`` (settings: the rest)."""

    def __init__(self) -> None:
        self._state = "wheel"

    def build_state(self, build_state: str) -> None:
        self._state = build_state

    def dynamic_wheel(self, settings) -> dict[str, bool]:
        return {"dependencies": True}  # the sdist cannot know which torch a wheel is built for

    def dynamic_metadata(self, settings, project) -> dict[str, list[str]]:
        deps = list(settings.get("dependencies", []))
        if self._state == "sdist":
            return {"dependencies": [*deps, "torch"]}
        try:
            torch_version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            sys.stdout.flush()
            raise SystemExit(
                "\nerror: " + isolated_build_message(sys.executable, _source_for_message())
            ) from None
        if self._state in ("wheel", "editable"):
            os.environ.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        return {"dependencies": [*deps, f"torch=={public_version(torch_version)}"]}

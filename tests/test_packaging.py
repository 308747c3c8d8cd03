"""Packaging rules: the wheel pins its torch, import checks it, the core needs no extras,
the CLI names a missing extra, --version, plain help, lazy submodules, the build hook."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedrnn
from fusedrnn import _build_config, _extras, _ops, cli
from fusedrnn._torch_check import torch_mismatch

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ALL_EXTRA_MODULES = [m for mods in _extras.EXTRAS.values() for m in mods]


def _python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def _python_ok(code: str) -> None:
    r = _python(code)
    assert r.returncode == 0, r.stderr


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


# ---- metadata: the core is torch + numpy, the extras are what _extras says -------------------
def test_extras_table_matches_pyproject():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in _extras.EXTRAS.items():
        names = {_name(r) for r in optional[extra]}
        assert names == {_extras.DISTRIBUTIONS.get(m, m) for m in modules}, extra
    assert {_name(r) for r in optional["test"]} == {"pytest", "fusedrnn"}


def test_the_core_depends_on_torch_and_numpy_only():
    (entry,) = PYPROJECT["tool"]["dynamic-metadata"]
    assert [_name(r) for r in entry["dependencies"]] == ["numpy"]  # the hook appends torch
    core = [r for r in importlib.metadata.requires("fusedrnn") if "extra ==" not in r]
    assert sorted(_name(r) for r in core) == ["numpy", "torch"]


def test_installed_metadata_pins_the_torch_it_was_built_against():
    public = _build_config.TORCH_VERSION.split("+")[0]
    assert f"torch=={public}" in importlib.metadata.requires("fusedrnn")
    assert fusedrnn.build_info()["torch_built_with"] == _build_config.TORCH_VERSION
    assert _build_config.TORCH_VERSION == torch.__version__


def test_licence_files_exist_and_are_declared():
    project = PYPROJECT["project"]
    assert project["license"] == "BSD-3-Clause"
    for name in project["license-files"]:
        assert (ROOT / name).is_file(), name
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()
    data = (ROOT / "DATA_LICENCES.md").read_text()
    for f in (ROOT / "python/fusedrnn/datasets").glob("*.gz"):
        assert f"`{f.name}`" in data, f.name  # every bundled data file has its licence listed


# ---- import fusedrnn checks the running torch against the build's ----------------------------
@pytest.mark.parametrize(
    "built, built_cuda, cuda, running, running_cuda, expect",
    [
        ("2.13.0+cpu", "", False, "2.13.0+cpu", None, None),
        ("2.13.0+cpu", "", False, "2.13.0", None, None),  # local labels may differ
        ("2.13.0+cpu", "", False, "2.13.0+cu130", "13.0", None),  # CPU kernels, CUDA torch
        ("2.13.0+cpu", "", False, "2.14.1+cpu", None, "torch==2.13.0"),
        ("2.14.1+cu130", "13.0", True, "2.14.1+cpu", None, "has no CUDA"),
        ("2.14.1+cu130", "13.0", True, "2.14.1+cu126", "12.6", "uses CUDA 12.6"),
        ("2.14.1+cu130", "13.0", True, "2.14.1+cu131", "13.1", None),
    ],
)
def test_torch_mismatch_rules(built, built_cuda, cuda, running, running_cuda, expect):
    problem = torch_mismatch("0.1.0", built, built_cuda, cuda, running, running_cuda)
    if expect is None:
        assert problem is None
    else:
        assert expect in problem and f"built against torch {built}" in problem
        assert "--no-build-isolation" in problem


def test_import_with_another_torch_release_is_a_clear_import_error():
    r = _python("import torch; torch.__version__ = '2.99.0'; import fusedrnn")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fusedrnn "), r.stderr
    assert f"built against torch {_build_config.TORCH_VERSION}" in last
    assert "torch 2.99.0 is installed" in last


def test_import_with_another_recorded_torch_is_a_clear_import_error():
    code = (
        "import sys, types\n"
        "sys.modules['fusedrnn._build_config'] = types.SimpleNamespace(\n"
        "    VERSION='0.1.0', TORCH_VERSION='2.12.0+cpu', TORCH_CUDA='', CUDA=False)\n"
        "import fusedrnn\n"
    )
    r = _python(code)
    assert r.returncode != 0
    assert "ImportError: fusedrnn 0.1.0 was built against torch 2.12.0+cpu" in r.stderr
    assert "fusedrnn._C" not in r.stderr  # stopped before the extension loaded


def test_import_accepts_another_local_label_of_the_same_release():
    public = torch.__version__.split("+")[0]
    _python_ok(f"import torch; torch.__version__ = '{public}+cu999'; import fusedrnn")


# ---- the core without the extras -----------------------------------------------------------
_BLOCK = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"


def test_core_imports_and_runs_without_any_extra():
    code = _BLOCK.format(mods=ALL_EXTRA_MODULES) + (
        "import torch, fusedrnn\n"
        "m, x = fusedrnn.LSTM(3, 4), torch.randn(5, 2, 3)\n"
        "assert torch.allclose(m(x)[0], m.to_torch()(x)[0], atol=1e-5)\n"
        "assert fusedrnn.check is not None\n"
    )
    _python_ok(code)


def test_import_fusedrnn_loads_no_extra_and_no_application_module():
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"  # torch itself may import tqdm
        "import fusedrnn\n"
        "bad = [m for m in set(sys.modules) - before\n"
        f"       if m.split('.')[0] in {ALL_EXTRA_MODULES!r}"
        " or m.startswith(('fusedrnn.data', 'fusedrnn.train', 'fusedrnn.experiments'))]\n"
        "assert not bad, bad\n"
    )
    _python_ok(code)


def test_submodules_are_lazy_attributes():
    code = (
        "import sys, fusedrnn\n"
        "assert 'fusedrnn.train' not in sys.modules\n"
        "assert fusedrnn.train.TrainConfig and fusedrnn.data.load_prices\n"
        "assert fusedrnn.experiments.__name__ == 'fusedrnn.experiments'\n"
        "assert 'fusedrnn.train' in sys.modules and 'data' in dir(fusedrnn)\n"
        "assert isinstance(fusedrnn.tuning.get()['fuse'], bool)\n"  # as tuning's docstring uses it
    )
    _python_ok(code)
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        fusedrnn.no_such_thing  # noqa: B018
    has_forecast = (ROOT / "python/fusedrnn/forecast.py").exists() or (
        ROOT / "python/fusedrnn/forecast"
    ).is_dir()
    assert hasattr(fusedrnn, "forecast") == has_forecast


def test_a_submodule_needing_a_missing_extra_names_it(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("import pandas\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ModuleNotFoundError, match=r"fakepkg.app needs pandas.*fusedrnn\[apps\]"):
        _extras.import_submodule("fakepkg", "app")
    with pytest.raises(AttributeError):
        _extras.import_submodule("fakepkg", "absent")


# ---- the command line ------------------------------------------------------------------------
def test_a_command_whose_extra_is_missing_says_which_to_install():
    code = _BLOCK.format(mods=["matplotlib"]) + (
        "from fusedrnn.cli import main\nsys.exit(main(['stock', '--epochs', '1']))\n"
    )
    r = _python(code)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "fusedrnn stock: needs matplotlib, from the 'apps' extra: pip install 'fusedrnn[apps]'"
    ]
    assert r.stdout == ""


def test_the_main_job_runs_without_yfinance_on_the_bundled_prices(tmp_path):
    """yfinance is the one package of 'apps' the main job can do without: --source auto then
    says it is not installed and falls back to the bundled prices (as when offline)."""
    code = _BLOCK.format(mods=["yfinance"]) + (
        "from fusedrnn.cli import main\n"
        "sys.exit(main(['stock', '--source', 'auto', '--period', '1y', '--window', '10', "
        "'--hidden', '4', '--layers', '1', '--epochs', '1', '--cell', 'rnn', '--no-plots', "
        f"'--out', {str(tmp_path / 'out')!r}]))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert "yfinance is not installed" in r.stdout + r.stderr
    assert "data: bundled" in r.stdout


def test_a_missing_extra_found_while_running_is_one_line_too(monkeypatch, capsys):
    mod = type(sys)("fake_command")
    mod.configure = lambda parser: None

    def run(args):
        import sklearn.linear_model  # noqa: F401

    mod.run = run
    monkeypatch.setitem(sys.modules, "fake_command", mod)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a test command"))
    monkeypatch.setitem(cli.COMMAND_EXTRAS, "fake", ())
    assert cli.main(["fake"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "fusedrnn fake: needs scikit-learn, from the 'apps' extra: pip install 'fusedrnn[apps]'\n"
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == (
        f"fusedrnn {fusedrnn.__version__} (built against torch {_build_config.TORCH_VERSION}, "
        f"{'CUDA ' + _build_config.TORCH_CUDA if _build_config.CUDA else 'CPU only'}; "
        f"running torch {torch.__version__})"
    )
    r = subprocess.run(
        [sys.executable, "-m", "fusedrnn", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == out


def test_plain_strips_rest_markup():
    text = "``x`` calls :func:`torch.compile` on :class:`~torch.nn.LSTM`, `y` and **z**"
    assert cli.plain(text) == "x calls torch.compile on LSTM, y and z"
    parser = argparse.ArgumentParser(
        description="Uses ``--k1``.", formatter_class=cli._plain_formatter(argparse.HelpFormatter)
    )
    parser.add_argument("--k1", help="steps of ``forward`` (:class:`torch.Tensor`)")
    help_text = parser.format_help()
    assert "Uses --k1." in help_text and "steps of forward (torch.Tensor)" in help_text
    assert "`" not in help_text


@pytest.mark.parametrize("argv", [[]] + [[name] for name in cli.COMMANDS])
def test_help_has_no_markup(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fusedrnn" in out
    assert "``" not in out and ":class:" not in out and ":func:" not in out


# ---- the build hook and CMake's checks -------------------------------------------------------
def _torch_pin():
    spec = importlib.util.spec_from_file_location("torch_pin", ROOT / "build_tools/torch_pin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_hook_pins_the_build_torch_and_stops_an_isolated_build(monkeypatch):
    pin = _torch_pin()
    provider = pin.Provider()
    provider.build_state("metadata_wheel")
    deps = provider.dynamic_metadata({"dependencies": ["numpy>=1.24"]}, {})["dependencies"]
    assert deps == ["numpy>=1.24", f"torch=={torch.__version__.split('+')[0]}"]
    provider.build_state("sdist")
    assert provider.dynamic_metadata({}, {}) == {"dependencies": ["torch"]}
    assert provider.dynamic_wheel({}) == {"dependencies": True}

    def no_torch(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(pin.metadata, "version", no_torch)
    provider.build_state("wheel")
    with pytest.raises(SystemExit) as e:
        provider.dynamic_metadata({}, {})
    assert "pip install --no-build-isolation" in str(e.value)
    assert pin.BUILD_REQUIREMENTS in str(e.value)


def _configure(build: Path, python, env=None):
    cmake = Path(sys.executable).with_name("cmake")
    cmd = [str(cmake if cmake.exists() else "cmake"), "-S", str(ROOT), "-B", str(build)]
    cmd += ["-G", "Ninja", f"-DPython_EXECUTABLE={python}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    r.text = " ".join((r.stdout + r.stderr).split())
    return r


def test_cmake_stops_at_once_without_torch(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "v"], check=True)
    r = _configure(tmp_path / "b", tmp_path / "v/bin/python")
    assert r.returncode != 0
    assert "cannot import torch" in r.text and "pip install --no-build-isolation" in r.text


def test_cmake_cuda_only_when_asked_or_torch_has_it(tmp_path):
    # An nvcc of another CUDA major version than any torch's, and a ccache, both on PATH.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ccache").write_text('#!/bin/sh\nexec "$@"\n')
    (fake / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 1.0'\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "CUDACXX": str(fake / "nvcc")}
    env.pop("FUSEDRNN_CUDA", None)

    asked = _configure(tmp_path / "asked", sys.executable, {**env, "FUSEDRNN_CUDA": "1"})
    assert asked.returncode != 0  # asked for CUDA that cannot be built: a clear stop
    assert "FUSEDRNN_CUDA=1 asks for the CUDA kernels, but" in asked.text
    why = f"torch {torch.__version__} has no CUDA" if torch.version.cuda is None else "is CUDA 1.0"
    assert why in asked.text

    bad = _configure(tmp_path / "bad", sys.executable, {**env, "FUSEDRNN_CUDA": "maybe"})
    assert bad.returncode != 0 and "FUSEDRNN_CUDA must be 1" in bad.text

    # Unset: nvcc alone never turns CUDA on; a CUDA torch without a matching nvcc gives a
    # CPU-only build (configured without torch's CMake config, which would want CUDA) + warning.
    auto = _configure(tmp_path / "auto", sys.executable, env)
    assert auto.returncode == 0, auto.stderr
    assert "CUDA on" not in auto.text
    assert "CMAKE_CUDA_COMPILER:" not in (tmp_path / "auto/CMakeCache.txt").read_text()
    assert ("building the CPU kernels only" in auto.text) == (torch.version.cuda is not None)
    assert f"compiling through {fake}/ccache" in auto.text


def test_build_folders():
    skb = PYPROJECT["tool"]["scikit-build"]
    assert "build-dir" not in skb  # pip install . builds in a temporary folder
    (editable,) = [o for o in skb["overrides"] if o["if"].get("state") == "editable"]
    assert editable["build-dir"] == "build/{wheel_tag}"


# What only the C++ runtime library itself defines (operator new, exceptions, locales, streams).
_CXX_RUNTIME = re.compile(
    r"(_Znwm|_ZdlPv|__cxa_\w+|__gxx_personality_v0|_ZNSt6locale\w*|_ZNSt8ios_base\w*)"
)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("nm") is None,
    reason="reads the ELF symbol table with binutils' nm",
)
def test_the_extension_exports_no_copy_of_the_cxx_runtime():
    """A toolchain that links libstdc++ statically (the H200 machine's g++ 13) must not leave
    that copy exported: torch's libstdc++.so takes over half of its calls, and there the first
    C++ error message with a number in it segfaulted (CMakeLists.txt, --exclude-libs)."""
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", _ops._C.__file__], capture_output=True, text=True, check=True
    )
    exported = [line.split()[-1] for line in nm.stdout.splitlines() if line.strip()]
    assert exported, "nm listed no exported symbol at all"
    leaked = [s for s in exported if _CXX_RUNTIME.fullmatch(s)]
    assert not leaked, f"{len(leaked)} C++ runtime symbols exported, e.g. {leaked[:5]}"

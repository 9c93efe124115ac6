"""The top-level kernels/ folder is ada2i_fast.kernels and nothing else: run from the repository root,
a top-level ``import kernels`` reaches PyPI's package of that name (transformers imports it) or fails
as if the folder were not there."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


def _python(code, *flags, cwd=REPOSITORY):
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def _installed_kernels_folder():
    try:
        distribution = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(distribution.locate_file("kernels")).resolve()


def test_the_installed_kernels_package_wins_from_the_repository_root():
    installed = _installed_kernels_folder()
    if installed is None:
        pytest.skip("PyPI's kernels package is not installed (pip install -e '.[dev]' brings it with transformers)")
    result = _python("import kernels; print(kernels.__file__)")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve().parent == installed


def test_transformers_hub_kernels_import_from_the_repository_root():
    pytest.importorskip("transformers")
    if _installed_kernels_folder() is None:
        pytest.skip("PyPI's kernels package is not installed")
    result = _python("import transformers.integrations.hub_kernels")
    assert result.returncode == 0, result.stderr


def test_without_another_kernels_package_a_top_level_import_fails_from_the_repository_root():
    # -S: no site-packages, so nothing else named kernels can be found; sys.path[0] is the root.
    result = _python("import kernels", "-S")
    assert "ModuleNotFoundError: No module named 'kernels'" in result.stderr


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_the_package_s_own_kernels_are_reached_as_ada2i_fast_kernels(where, tmp_path):
    cwd = REPOSITORY if where == "root" else tmp_path
    result = _python("import ada2i_fast.kernels as k; print(k.__file__, k.tensor_ring.__module__)", cwd=cwd)
    assert result.returncode == 0, result.stderr
    file, module = result.stdout.split()
    assert Path(file).resolve() == REPOSITORY / "kernels" / "__init__.py"
    assert module == "ada2i_fast.kernels.tensor_ring"

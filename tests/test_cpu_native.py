"""The native CPU kernels' library: the generator's known answers, the build cache, and the fallback
to torch's ops (said once) where no C compiler works."""

import ctypes
import os
import subprocess
import sys

import pytest

from ada2i_fast.kernels import cpu_native

needs_native = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler for the native kernels")

# Random123's known-answer vectors for Threefry-4x32-20: (counter, key) -> output.
THREEFRY_KAT = [
    ((0, 0, 0, 0), (0, 0, 0, 0), (0x9C6CA96A, 0xE17EAE66, 0xFC10ECD4, 0x5256A7D8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 4, (0x2A881696, 0x57012287, 0xF6C7446E, 0xA16A6732)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0, 0x082EFA98, 0xEC4E6C89),
     (0x59CD1DBB, 0xB8879579, 0x86B5D00C, 0xAC8B6D84)),
]


@needs_native
@pytest.mark.parametrize("counter, key, expected", THREEFRY_KAT)
def test_threefry_matches_random123s_known_answers(counter, key, expected):
    words = ctypes.c_uint32 * 4
    out = words()
    cpu_native.library().ada2i_threefry4x32(words(*counter), words(*key), out)
    assert tuple(out) == expected


@needs_native
def test_the_library_is_built_once_per_source_compiler_and_cpu():
    built = cpu_native._build(cpu_native._compiler())
    assert built.parent == cpu_native.cache_dir() and built.is_file()
    assert cpu_native._build(cpu_native._compiler()) == built


SCRIPT = """
import warnings
warnings.simplefilter("always")
import torch
from ada2i_fast import Ada2I, TrainConfig
from ada2i_fast.kernels import cpu_native
from ada2i_fast.training.step import make_optimizer, train_step
import conftest
for _ in range(2):
    model, recipe, optimizer, batch = conftest.tiny_step_inputs()
    logs = train_step(model, batch, optimizer, recipe, modulate=True, generator=torch.Generator().manual_seed(0))
print("native" if cpu_native.available() else "torch", bool(torch.isfinite(logs["loss"])))
"""


@pytest.mark.parametrize("compiler", ["/nonexistent/cc", "false"])
def test_without_a_working_compiler_training_runs_on_torch_and_says_so_once(tmp_path, compiler):
    env = dict(os.environ, CC=compiler, ADA2I_CACHE_DIR=str(tmp_path / "cache"))
    tests = os.path.dirname(__file__)
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tests, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torch", "True"]
    assert result.stderr.count("the native CPU kernels are unavailable") == 1
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.so"))

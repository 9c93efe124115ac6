"""Fused ops of ada2i_fast and the backend switch.

This folder sits at the top of the repository but is installed as ``ada2i_fast.kernels`` (the
``package-dir`` mapping in pyproject.toml; an editable install follows it), so import it as
``from ada2i_fast.kernels import ...``, never as a top-level ``kernels``. Per op: a Triton file
(kernels, launchers that check their limits, an autograd Function), its torch twin, and the
literal oracle of SPEC §2 for the tensor ring.

Run from the repository root, Python finds this folder first whenever anything imports a top-level
``kernels`` (transformers imports PyPI's ``kernels``). Imported under any name but
``ada2i_fast.kernels``, this file steps aside: it loads the package installed under that name in
its place, or fails exactly as if this folder were not there.
"""

if __name__ == "ada2i_fast.kernels":
    from .amw_head import amw_head
    from .backend import BACKENDS, get_backend, resolve, set_backend, use_backend
    from .modulation import modulate_gradients
    from .tensor_ring import tensor_ring
    from .tensor_ring_torch import RANK_PROJECTIONS

    __all__ = [
        "BACKENDS",
        "RANK_PROJECTIONS",
        "amw_head",
        "get_backend",
        "modulate_gradients",
        "resolve",
        "set_backend",
        "tensor_ring",
        "use_backend",
    ]
else:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _repository_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _elsewhere = [p for p in sys.path if os.path.abspath(p or os.curdir) != _repository_root]
    _spec = importlib.machinery.PathFinder.find_spec(__name__, _elsewhere)
    if _spec is None:
        raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)
    sys.modules[__name__] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[__name__])

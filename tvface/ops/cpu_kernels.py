"""Small C++ kernels compiled on first use with the system compiler (deformable convolution,
rasteriser visibility), cached under ``~/.cache/tvface/kernels``.

:func:`compile_library` builds one source into a shared library keyed by the source, compiler,
flags and host CPU (the libraries use ``-march=native``), atomically, and returns it loaded with
ctypes, or None when kernels are switched off (``TVFACE_NO_COMPILE=1``), no compiler is found or the
build fails (with a warning): every caller keeps a pure-PyTorch path for that case.
``TVFACE_KERNEL_CACHE`` moves the cache.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

KERNEL_FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-fno-math-errno", "-shared", "-fPIC", "-std=c++17")
# libgomp by soname: inside this process it resolves to the one PyTorch already loaded, so the kernels
# share PyTorch's OpenMP threads. Without OpenMP the kernels run on one thread.
OPENMP_FLAGS = ("-fopenmp",)


def cpu_signature() -> str:
    """Identifies the host CPU for the kernel cache, as the libraries are built with -march=native."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in info if ln.startswith(("model name", "flags"))][:2]
    return "\n".join(keep)


def kernels_disabled() -> bool:
    return os.environ.get("TVFACE_NO_COMPILE", "") not in ("", "0")


def compile_library(name: str, source: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL | None:
    """``source`` compiled into ``<cache>/<name>_<hash>.so`` (once) and loaded, or None (see module)."""
    if kernels_disabled():
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return None
    flags = (*KERNEL_FLAGS, *extra_flags)
    key = hashlib.sha256("\0".join([source, cxx, *flags, cpu_signature()]).encode())
    cache = Path(os.environ.get("TVFACE_KERNEL_CACHE", Path.home() / ".cache" / "tvface" / "kernels"))
    lib_path = cache / f"{name}_{key.hexdigest()[:16]}.so"
    try:
        if not lib_path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src, out = Path(tmp) / f"{name}.cpp", Path(tmp) / "lib.so"
                src.write_text(source)
                cmd = [cxx, *flags, "-o", str(out), str(src)]
                if subprocess.run(cmd + list(OPENMP_FLAGS), check=False, capture_output=True).returncode != 0:
                    subprocess.run(cmd, check=True, capture_output=True, text=True)
                os.replace(out, lib_path)  # atomic: concurrent builds are harmless
        return ctypes.CDLL(str(lib_path))
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", "") or err
        warnings.warn(f"tvface {name}: building the CPU kernels in {cache} failed ({detail}); using the "
                      f"slower pure-PyTorch path. Set TVFACE_NO_COMPILE=1 to silence this.", stacklevel=3)
        return None

"""Pure domain code: events, records, contributions, windows, the catalogue. No I/O.

The planner's modules (``COMPILED``) are loaded compiled by mypyc when a whole build of
exactly the package's present sources is in ``build/compiled/<digest>/`` (``make`` builds
it with tools/compile_planner.py): the same source, about a sixth less CPU planning a batch
(benchmarks/RESULTS.md). An edited module runs as Python until the next build, so a build
can never be stale; where none could be built, or with ``SALESPULSE_COMPILED=0``, all run
as Python.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

COMPILED = ("commit_payload", "contributions", "engine", "entities", "windows")
BUILDS = Path(__file__).resolve().parent.parent / "build" / "compiled"


def sources_digest(package: Path) -> str:
    """The digest naming a build of the ``COMPILED`` modules of ``package`` for this Python:
    of every module of the package, as mypyc compiles against the types and constants of
    those the compiled ones import."""
    digest = hashlib.sha256(sys.version.encode())
    for module in sorted(package.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def compiled_build(package: Path, builds: Path) -> Path | None:
    """The build of the present sources in ``builds``, None when there is none, it lacks a
    module, or it is turned off."""
    if os.environ.get("SALESPULSE_COMPILED", "1") == "0":
        return None
    build = builds / sources_digest(package)
    return build if is_whole(build) else None


def is_whole(build: Path) -> bool:
    """Whether ``build`` holds every COMPILED module and mypyc's shared library."""
    modules = build / "projections"
    compiled = all(any(modules.glob(f"{name}.*.so")) for name in COMPILED)
    return compiled and any(build.glob("*__mypyc*.so"))


_build = compiled_build(Path(__file__).resolve().parent, BUILDS)
if _build is not None:
    # Searched before the sources for the modules it holds; mypyc's shared library beside.
    __path__.insert(0, str(_build / "projections"))
    sys.path.append(str(_build))

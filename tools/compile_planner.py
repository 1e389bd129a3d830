"""Build the planner's modules with mypyc into build/compiled/<digest of the package's
sources>/, where projections/__init__.py looks for them; `make` runs it before the demo and
the tests.

    python -m tools.compile_planner

Up to date: says so and returns at once. Without a C compiler, Python's headers or
setuptools, or when mypyc fails (its output is shown), says so and leaves the modules to run
as Python (same results, more CPU): `make demo` and `make test` work on any machine. mypyc
compiles a copy of the package in a scratch folder (this checkout's pyproject.toml is not a
setup script's business), and the build appears whole or not at all; the newest few builds
are kept.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from projections import BUILDS, COMPILED, is_whole, sources_digest

PACKAGE = Path(__file__).resolve().parent.parent / "projections"


def build(package: Path, builds: Path) -> str:
    """Build ``package``'s COMPILED modules into ``builds``; returns what was done."""
    digest = sources_digest(package)
    target = builds / digest
    if is_whole(target):
        return f"compiled planner up to date ({target})"
    missing = _missing_for_a_build()
    if missing:
        return f"{missing}: the planner's modules run as Python"
    builds.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=builds, prefix=".work-") as scratch:
        work = Path(scratch)
        shutil.copytree(package, work / "projections", ignore=shutil.ignore_patterns("__pycache__"))
        modules = [f"projections/{name}.py" for name in COMPILED]
        done = subprocess.run(
            [sys.executable, "-m", "mypyc", "--ignore-missing-imports", *modules],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"{done.stdout[-3000:]}{done.stderr[-3000:]}", file=sys.stderr)
            return "mypyc failed (above): the planner's modules run as Python"
        made = work / "made"
        (made / "projections").mkdir(parents=True)
        for library in work.glob("*__mypyc*.so"):
            library.rename(made / library.name)
        for name in COMPILED:
            (extension,) = (work / "projections").glob(f"{name}.*.so")
            extension.rename(made / "projections" / extension.name)
        try:
            made.rename(target)
        except OSError:
            if not is_whole(target):  # else another make built the same sources meanwhile
                raise
    # The newest few stay: a process started before the sources changed (or under another
    # Python) may still be importing from its build.
    done_builds = [b for b in builds.iterdir() if not b.name.startswith(".")]
    for old in sorted(done_builds, key=lambda b: b.stat().st_mtime, reverse=True)[KEPT:]:
        shutil.rmtree(old, ignore_errors=True)
    return f"compiled the planner's modules into {target}"


KEPT = 4


def _missing_for_a_build() -> str:
    """What this machine lacks to build (empty: nothing)."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no {headers} (python3-dev)"
    if importlib.util.find_spec("setuptools") is None:
        return "no setuptools in this Python (mypyc builds with it)"
    return ""


def main() -> None:
    try:
        print(build(PACKAGE, BUILDS))
    except (RuntimeError, OSError) as exc:
        sys.exit(f"compile_planner: {exc}")


if __name__ == "__main__":
    main()

"""The Dockerfile cannot be built here (no Docker engine): check what it copies and installs.

An image that misses a package listed in pyproject fails at ``pip install .``; one that
misses a distribution the code imports fails when a process starts; one built from
requirements.lock carries the test tools (pytest, playwright, duckdb...) into production.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = "requirements.runtime.lock"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(dockerfile: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return found


def words(args: str) -> list[str]:
    """Arguments in exec (JSON) or shell form, without --flags."""
    parts = json.loads(args) if args.startswith("[") else shlex.split(args)
    return [p for p in parts if not p.startswith("--")]


def copies(steps: list[Instruction]) -> list[tuple[int, str]]:
    """(instruction index, source) of each file or folder COPY'd from the build context."""
    found = []
    for index, step in enumerate(steps):
        if step.keyword in {"COPY", "ADD"} and "--from=" not in step.args:
            for source in words(step.args)[:-1]:
                found.append((index, source.removeprefix("./").rstrip("/") or "."))
    return found


def copied_by(path: str, steps: list[Instruction]) -> int | None:
    """The index of the first instruction that copies ``path`` into the image, or None."""
    for index, source in copies(steps):
        if source == "." or path == source or path.startswith(source + "/"):
            return index
    return None


def ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore line as Docker reads it: from the context's root, ``*`` and ``?``
    within one path segment, ``**`` across any number of them."""
    regex = ""
    for part in re.split(r"(\*\*/?|\*|\?)", pattern.strip("/")):
        if part.startswith("**"):
            regex += "(.*/)?" if part.endswith("/") else ".*"
        elif part == "*":
            regex += "[^/]*"
        elif part == "?":
            regex += "[^/]"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder above it) out of the build context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "teach dockerignored() about '!'"
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        ignore_pattern(pattern).fullmatch(prefix) for pattern in patterns for prefix in prefixes
    )


@pytest.fixture(scope="module")
def steps() -> list[Instruction]:
    return instructions((ROOT / "Dockerfile").read_text())


def runtime_lock() -> dict[str, str]:
    """The runtime lock's pins by normalised name."""
    pins: dict[str, str] = {}
    for line in (ROOT / RUNTIME_LOCK).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def project_install(steps: list[Instruction]) -> tuple[int, Instruction]:
    """The RUN that installs the project itself (``pip install ... .``)."""
    for index, step in enumerate(steps):
        if step.keyword == "RUN" and "pip install" in step.args and " . " in f"{step.args} ":
            return index, step
    raise AssertionError("the Dockerfile never installs the project (pip install .)")


def test_dockerignore_patterns_match_as_docker_does() -> None:
    assert ignore_pattern("**/__pycache__").fullmatch("__pycache__")
    assert ignore_pattern("**/__pycache__").fullmatch("a/b/__pycache__")
    assert ignore_pattern("*.egg-info").fullmatch("salespulse.egg-info")
    assert not ignore_pattern("secrets").fullmatch("deploy/secrets")
    assert not ignore_pattern("*/x").fullmatch("a/b/x")


def test_instructions_join_continuation_lines() -> None:
    text = "# c\nFROM python:3.11-slim\nCOPY a \\\n  b ./\nRUN pip install \\\n  -r x.lock\n"
    assert instructions(text) == [
        Instruction("FROM", "python:3.11-slim"),
        Instruction("COPY", "a    b ./"),
        Instruction("RUN", "pip install    -r x.lock"),
    ]
    assert copies(instructions(text)) == [(1, "a"), (1, "b")]


def test_every_package_of_pyproject_is_copied(steps: list[Instruction]) -> None:
    install, _ = project_install(steps)
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        folder = package.split(".")[0]
        assert (ROOT / folder / "__init__.py").is_file(), f"pyproject lists missing {package}"
        index = copied_by(folder, steps)
        assert index is not None, f"the Dockerfile never copies {folder}/ (package {package})"
        assert index < install, f"{folder}/ is copied after pip install ."


def test_every_file_pip_install_reads_is_copied(steps: list[Instruction]) -> None:
    project = PYPROJECT["project"]
    readme = project["readme"]
    needed = [
        "pyproject.toml",
        readme if isinstance(readme, str) else readme["file"],
        *project.get("license-files", []),
    ]
    install, _ = project_install(steps)
    for path in needed:
        assert (ROOT / path).is_file(), path
        index = copied_by(path, steps)
        assert index is not None and index < install, f"pip install . needs {path}"


def test_nothing_the_image_copies_is_dockerignored(steps: list[Instruction]) -> None:
    for _, source in copies(steps):
        assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"
        assert not dockerignored(source), f".dockerignore leaves {source} out of the build"


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    for path in [".git", ".venv", ".salespulse/stack", ".env", "deploy/.env", "deploy/secrets"]:
        assert dockerignored(path), f".dockerignore does not exclude {path}"
    assert dockerignored("streams/__pycache__/app.cpython-311.pyc")
    assert not dockerignored("streams/app.py")


def test_the_image_installs_the_runtime_lock_not_the_dev_tools(
    steps: list[Instruction],
) -> None:
    installs = [
        (i, s) for i, s in enumerate(steps) if s.keyword == "RUN" and "pip install" in s.args
    ]
    assert installs, "the Dockerfile installs nothing"
    for _, step in installs:
        assert "requirements.lock" not in step.args, "requirements.lock holds the test tools"
        assert "[dev]" not in step.args and "-e " not in step.args, step.args
    locked = [i for i, s in installs if f"-r {RUNTIME_LOCK}" in s.args]
    assert locked, f"no RUN pip install -r {RUNTIME_LOCK}"
    copied = copied_by(RUNTIME_LOCK, steps)
    assert copied is not None and copied < locked[0], f"{RUNTIME_LOCK} is not copied first"
    install, step = project_install(steps)
    assert locked[0] < install
    # Everything else comes from the lock: nothing unpinned when the project is installed.
    assert "--no-deps" in step.args, step.args


def _runtime_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runtime_lock", ROOT / "deploy/runtime_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_runtime_lock_is_what_make_lock_writes() -> None:
    rendered = _runtime_lock_module().render(ROOT)
    assert (ROOT / RUNTIME_LOCK).read_text() == rendered, f"{RUNTIME_LOCK} is stale: make lock"


def test_the_runtime_lock_pins_what_the_tests_ran_against_and_no_dev_tool() -> None:
    runtime = runtime_lock()
    full = _runtime_lock_module().pins(ROOT / "requirements.lock")
    for name, version in runtime.items():
        pinned = full.get(name, "").partition("==")[2]
        assert pinned == version, f"{name}=={version}: requirements.lock has {pinned or 'none'}"
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        pinned = runtime.get(canonicalize_name(requirement.name))
        assert pinned is not None and requirement.specifier.contains(pinned), text
    for text in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        name = canonicalize_name(Requirement(text).name)
        assert name not in runtime, f"dev tool {name} in {RUNTIME_LOCK}"


class _Imports(ast.NodeVisitor):
    """Top-level names of absolute imports, except those under ``if TYPE_CHECKING:``."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name.split(".")[0] for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.names.add(node.module.split(".")[0])


def runtime_imports() -> dict[str, str]:
    """Third-party top-level modules the image's packages import, with one file each."""
    packages = {p.split(".")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]}
    found: dict[str, str] = {}
    for package in sorted(packages):
        for path in sorted((ROOT / package).rglob("*.py")):
            visitor = _Imports()
            visitor.visit(ast.parse(path.read_text(), str(path)))
            for name in visitor.names - packages - set(sys.stdlib_module_names) - {"__future__"}:
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_module_the_runtime_imports_is_in_the_runtime_lock() -> None:
    imported = runtime_imports()
    assert {"faust", "aiokafka", "redis", "aiohttp"} <= imported.keys()
    distributions = metadata.packages_distributions()
    runtime = runtime_lock()
    for module, where in sorted(imported.items()):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, f"{where} imports {module}, which no installed distribution provides"
        assert names & runtime.keys(), f"{where} imports {module} ({names}): not in {RUNTIME_LOCK}"

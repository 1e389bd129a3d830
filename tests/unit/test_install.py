"""Missing prerequisites are reported with what to install, not with a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stack import install
from stack.install import MissingPrerequisite, kafka_libs, require_binary, require_java

pytestmark = pytest.mark.unit


def test_no_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingPrerequisite, match="apt-get install openjdk-17"):
        require_java(17)


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingPrerequisite, match="java 17\\+ needed"):
        require_java(17)


def test_no_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(MissingPrerequisite, match="apt-get install maven"):
        kafka_libs("4.1.1")


def test_not_root_and_no_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    with pytest.raises(MissingPrerequisite, match="sudo apt-get install redis-server"):
        require_binary("redis-server", "redis-server")


def test_a_binary_on_the_path_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "prometheus"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert require_binary("prometheus", "prometheus") == str(tool)


def test_only_the_kafka_4_line_is_supported() -> None:
    with pytest.raises(MissingPrerequisite, match=r"4\.x"):
        kafka_libs("3.9.1")

"""Find or install what the local stack runs on: Java, Kafka's jars, Redis, Prometheus."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from projections.errors import SalespulseError

LOG4J_VERSION = "2.24.3"


class MissingPrerequisite(SalespulseError):
    """Something the stack needs is not installed and cannot be installed from here."""


def _apt_install(package: str) -> None:
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if done.returncode != 0:
        raise MissingPrerequisite(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")


def require_binary(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` when we are root."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        raise MissingPrerequisite(
            f"{binary} not found: install it with `sudo apt-get install {package}`"
        )
    _apt_install(package)
    found = shutil.which(binary)
    if not found:
        raise MissingPrerequisite(f"{binary} still not found after apt-get install {package}")
    return found


def require_java(minimum: int) -> None:
    java = shutil.which("java")
    advice = f"install a JDK {minimum}+, e.g. `sudo apt-get install openjdk-{minimum}-jre-headless`"
    if not java:
        raise MissingPrerequisite(f"java not found: {advice}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', out.stderr + out.stdout)
    if not match or int(match.group(1)) < minimum:
        raise MissingPrerequisite(
            f"java {minimum}+ needed, found {out.stderr.strip()[:80]}: {advice}"
        )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "salespulse"


POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.salespulse</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <!-- Kafka declares its logging backend compileOnly: without these it logs nothing. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


def kafka_libs(version: str) -> Path:
    """Kafka's runtime jars from Maven Central, cached per version; returns the folder."""
    if not version.startswith("4."):
        raise MissingPrerequisite(
            f"SALESPULSE_KAFKA_VERSION={version}: only the Kafka 4.x line is supported"
        )
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingPrerequisite(
            "mvn not found (needed once to fetch Kafka's jars): "
            "install it with `sudo apt-get install maven`"
        )
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(POM.format(kafka=version, log4j=LOG4J_VERSION))
    done = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(home / "pom.xml"),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise MissingPrerequisite(
            f"fetching Kafka {version} with Maven failed: {(done.stdout + done.stderr)[-500:]}"
        )
    marker.write_text(version)
    return libs

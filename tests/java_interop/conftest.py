"""Apache Kafka's own Java clients and tools against oncelog (`tests/java/pom.xml`).

The jars come from Maven Central through `mvn dependency:copy-dependencies` into a cache keyed by the
pom's contents (~/.cache/oncelog-tests/kafka-java-<hash>/), so only the first run downloads. Without
java or mvn the tests skip, saying so, unless ONCELOG_REQUIRE_JAVA=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POM = Path(__file__).parents[1] / "java" / "pom.xml"
CACHE = Path.home() / ".cache" / "oncelog-tests"
JVM = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


SOURCES = Path(__file__).parents[1] / "java" / "src"


@dataclass(frozen=True)
class KafkaJava:
    jars: Path
    classes: Path
    """Our own Java sources (tests/java/src), compiled."""

    @property
    def classpath(self) -> str:
        return f"{self.classes}:{self.jars}/*"

    def run(self, main_class: str, *args: str, stdin: str | None = None,
            timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["java", *JVM, "-cp", self.classpath, main_class, *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout_s)

    def start(self, main_class: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["java", *JVM, "-cp", self.classpath, main_class, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("ONCELOG_REQUIRE_JAVA") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_java() -> Iterator[KafkaJava]:
    if shutil.which("java") is None or shutil.which("javac") is None or shutil.which("mvn") is None:
        _unavailable("needs java, javac and mvn (Debian: default-jdk-headless maven)")
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    jars = CACHE / f"kafka-java-{digest}"
    if not (jars / ".complete").exists():
        partial = CACHE / f"kafka-java-{digest}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        fetched = subprocess.run(["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                                  f"-DoutputDirectory={partial}"], capture_output=True, text=True, timeout=900)
        if fetched.returncode != 0:
            _unavailable(f"mvn could not fetch Kafka's jars: {fetched.stdout[-2000:]}{fetched.stderr[-2000:]}")
        (partial / ".complete").write_text("")
        shutil.rmtree(jars, ignore_errors=True)
        partial.rename(jars)
    sources = sorted(SOURCES.glob("*.java"))
    source_digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:12]
    classes = CACHE / f"classes-{digest}-{source_digest}"
    if not (classes / ".complete").exists():
        classes.mkdir(parents=True, exist_ok=True)
        compiled = subprocess.run(["javac", "-d", str(classes), "-cp", f"{jars}/*", *map(str, sources)],
                                  capture_output=True, text=True, timeout=300)
        assert compiled.returncode == 0, compiled.stderr
        (classes / ".complete").write_text("")
    yield KafkaJava(jars, classes)

"""A real single-node Apache Kafka broker from Maven Central jars, for side-by-side tests and benchmarks.

    python bench/apache_kafka.py [--port 9092] [--dir /tmp/kafka]    # runs until Ctrl-C or SIGTERM

    from apache_kafka import apache_kafka                             # with bench/ on sys.path
    with apache_kafka(Path("/tmp/kafka")) as bootstrap:               # "127.0.0.1:PORT"
        ...

Theory of operation: there is no Kafka tarball here (no Apache mirrors, no Docker), but Maven Central has
the jars. `kafka_jars` writes a throwaway pom.xml naming `org.apache.kafka:kafka_2.13` (the server, main
class `kafka.Kafka`) plus `log4j-slf4j-impl` (the jars ship no slf4j binding, so the server would log
nothing), lets `mvn dependency:copy-dependencies` copy the runtime closure, and renames the directory to
~/.cache/oncelog-bench/kafka-<version>/ when complete, so later runs call no Maven. `apache_kafka` then
does what bin/kafka-storage.sh and bin/kafka-server-start.sh do: it writes a KRaft server.properties (one
node that is both broker and controller, a static controller quorum of itself, replication factors of 1
for the internal topics), formats a fresh log dir with `kafka.tools.StorageTool` (meta.properties and the
bootstrap metadata checkpoint), starts `java kafka.Kafka server.properties` with a 512 MiB heap, and waits
until an AdminClient can list topics. On exit the JVM gets SIGTERM (its shutdown hook runs
`KafkaRaftServer.shutdown`, a controlled shutdown) and SIGKILL if still alive after STOP_TIMEOUT_S.
server.log, server.properties and data/ stay in the work dir; a reused work dir restarts the same cluster.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.25.5"  # the log4j-core that kafka_2.13 4.4.0 depends on
CACHE_DIR = Path.home() / ".cache" / "oncelog-bench"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
JVM_OPTIONS = ["-Xmx512m", "-Xms512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"]

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>oncelog.bench</groupId><artifactId>apache-kafka</artifactId><version>0</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2_PROPERTIES = """status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
"""


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's runtime jars, resolved with Maven on first use and cached."""
    target = CACHE_DIR / f"kafka-{version}"
    if target.is_dir():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"kafka-{version}-", dir=CACHE_DIR) as scratch:
        pom = Path(scratch) / "pom.xml"
        pom.write_text(POM.format(kafka=version, log4j=LOG4J_VERSION))
        jars = Path(scratch) / "jars"
        command = [shutil.which("mvn") or "/usr/bin/mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                   "-DincludeScope=runtime", f"-DoutputDirectory={jars}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not (jars / f"kafka_2.13-{version}.jar").exists():
            raise RuntimeError(f"mvn could not resolve kafka_2.13 {version}:\n{result.stdout}{result.stderr}")
        try:
            jars.rename(target)
        except OSError:  # another process won the race: its copy is as good
            if not target.is_dir():
                raise
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cluster_id() -> str:
    """A random id as `org.apache.kafka.common.Uuid.toString` gives: URL-safe base64, unpadded, no leading '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(work_dir: Path, port: int, controller_port: int) -> str:
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(work_dir / "data"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_until_ready(process: subprocess.Popen[bytes], bootstrap: str, log: Path) -> None:
    """Wait for the port to accept connections (quietly), then for a metadata round trip to succeed."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    host, port = bootstrap.rsplit(":", 1)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kafka exited with {process.returncode} while starting; {log}:\n{tail(log)}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            time.sleep(0.2)
            continue
        try:
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)
            return
        except Exception:  # KafkaException until the broker has caught up with the metadata log
            time.sleep(0.2)
    raise RuntimeError(f"kafka did not start within {STARTUP_TIMEOUT_S:.0f} s; {log}:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def apache_kafka(work_dir: Path, port: int | None = None, *, version: str = KAFKA_VERSION) -> Iterator[str]:
    """Run Apache Kafka `version` on 127.0.0.1:`port` (free if None) in `work_dir`; yield its bootstrap."""
    jars = kafka_jars(version)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    properties, log = work_dir / "server.properties", work_dir / "server.log"
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    properties.write_text(server_properties(work_dir, port, controller_port))
    (work_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
    logging = f"-Dlog4j2.configurationFile={work_dir / 'log4j2.properties'}"
    java = [shutil.which("java") or "java", *JVM_OPTIONS, logging, "-cp", str(jars / "*")]
    with log.open("ab") as output:
        # Formatting twice fails even with --ignore-formatted: the new cluster id differs from meta.properties'
        # (org.apache.kafka.metadata.properties.MetaPropertiesEnsemble.verify), so only a fresh dir is formatted.
        if not (work_dir / "data" / "meta.properties").exists():
            storage_format = [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(properties)]
            formatted = subprocess.run(storage_format, stdout=output, stderr=subprocess.STDOUT)
            if formatted.returncode != 0:
                raise RuntimeError(f"kafka.tools.StorageTool format failed; {log}:\n{tail(log)}")
        process = subprocess.Popen([*java, "kafka.Kafka", str(properties)], stdout=output, stderr=subprocess.STDOUT)
    try:
        bootstrap = f"127.0.0.1:{port}"
        wait_until_ready(process, bootstrap, log)
        yield bootstrap
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="the client port (default: a free one)")
    parser.add_argument("--dir", type=Path, default=None, help="work dir for config, data and server.log")
    parser.add_argument("--version", default=KAFKA_VERSION, help=f"Kafka version (default {KAFKA_VERSION})")
    args = parser.parse_args()
    work_dir: Path = args.dir or Path(tempfile.mkdtemp(prefix="apache-kafka-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds the context manager, stopping the JVM
    try:
        with apache_kafka(work_dir, args.port, version=args.version) as bootstrap:
            print(f"apache kafka {args.version} listening on {bootstrap}", flush=True)
            print(f"work dir {work_dir} (server.log, server.properties, data/)", file=sys.stderr, flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""kcat (librdkafka's CLI) against the broker: metadata, produce, and its balanced (-G) consumer, which
uses a consumer group and read_committed by default."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.helpers import create_topic

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (.ci/run installs it from Debian)")


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert KCAT is not None
    return subprocess.run([KCAT, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_kcat_lists_produces_and_consumes_in_a_group(oncelog_broker: str, topic_name: str) -> None:
    create_topic(oncelog_broker, topic_name, 3)
    listed = kcat("-b", oncelog_broker, "-L", "-t", topic_name)
    assert listed.returncode == 0 and f'topic "{topic_name}" with 3 partitions' in listed.stdout, listed.stdout
    values = [f"kcat-{i}" for i in range(60)]
    produced = kcat("-b", oncelog_broker, "-P", "-t", topic_name, stdin="\n".join(values) + "\n")
    assert produced.returncode == 0, produced.stderr
    consumed = kcat("-b", oncelog_broker, "-G", f"g-{topic_name}", topic_name, "-o", "beginning", "-c",
                    str(len(values)), "-f", "%s\n", "-X", "session.timeout.ms=6000")
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == sorted(values)
    counts = []
    for partition in range(3):  # the producer's partitioner may put every record in one partition
        again = kcat("-b", oncelog_broker, "-C", "-t", topic_name, "-p", str(partition), "-o", "beginning", "-e",
                     "-f", "%o\n")
        assert again.returncode == 0, again.stderr
        offsets = [int(line) for line in again.stdout.split()]
        assert offsets == list(range(len(offsets))), "kcat -e reads each partition to its end and exits"
        counts.append(len(offsets))
    assert sum(counts) == len(values)

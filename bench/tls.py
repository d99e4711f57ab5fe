"""Produce and read-back throughput through PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512) listeners of one
broker, side by side in the same run: what encryption and authentication cost.

    python bench/tls.py --records 200000 --size 1024

The broker is `oncelog serve` in a subprocess with a throwaway CA (trustme) and a SCRAM user made
offline; each listener gets the same workload: confluent-kafka, acks=all, one partition. Figures, not
assertions.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import trustme

from oncelog.testing import BrokerProcess
from produce_consume import consume, produce, report


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1024, help="value bytes per record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oncelog-bench-tls-") as directory:
        root = Path(directory)
        ca = trustme.CA()
        ca_file = root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        issued = ca.issue_cert("127.0.0.1", "localhost")
        keystore = root / "broker.pem"
        keystore.write_bytes(issued.private_key_pem.bytes() + b"".join(b.bytes() for b in issued.cert_chain_pems))
        data = root / "data"
        data.mkdir()
        subprocess.run([sys.executable, "-m", "oncelog", "users", "add", "bench", "--data-dir", str(data)],
                       input="bench-secret\n", text=True, check=True, capture_output=True)
        ports = {name: _free_port() for name in ("PLAINTEXT", "SSL", "SASL_SSL")}
        broker = BrokerProcess(data, {
            "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
            "ssl.keystore.location": str(keystore), "sasl.enabled.mechanisms": "SCRAM-SHA-512"})
        clients: dict[str, dict[str, Any]] = {
            "PLAINTEXT": {},
            "SSL": {"security.protocol": "SSL", "ssl.ca.location": str(ca_file)},
            "SASL_SSL": {"security.protocol": "SASL_SSL", "ssl.ca.location": str(ca_file),
                         "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench", "sasl.password": "bench-secret"},
        }
        try:
            broker.start()
            for name, port in ports.items():
                bootstrap = f"127.0.0.1:{port}"
                topic = f"bench-{name.lower()}-{uuid.uuid4().hex[:6]}"
                report(f"produce {name} acks=all", args.records, args.size,
                       produce(bootstrap, topic, args.records, args.size, "all", **clients[name]))
                report(f"read back {name}", args.records, args.size,
                       consume(bootstrap, topic, args.records, **clients[name]))
        finally:
            broker.terminate()


if __name__ == "__main__":
    main()

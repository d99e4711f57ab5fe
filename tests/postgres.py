"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on a free port.

Skips (with the reason) where the server binaries are missing; `.ci/run` installs them from Debian's
packages. PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed; .ci/run installs them"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'oncelog[eos]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a postgresql:// URL of a fresh server; stop and delete it afterwards."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    assert initdb and pg_ctl
    directory = tempfile.mkdtemp(prefix="oncelog-pg-")
    data = os.path.join(directory, "data")
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"], **run)  # type: ignore[call-overload]
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=on"
    subprocess.run([*prefix, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(directory, "log"), "-w",
                    "start"], **run)  # type: ignore[call-overload]
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(directory, ignore_errors=True)

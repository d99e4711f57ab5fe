"""`oncelog users add|list|delete`: SCRAM users, through a running broker or offline on its data dir.

Online (`--bootstrap`, with `--command-config` for a secured listener) it speaks Kafka's
AlterUserScramCredentials and DescribeUserScramCredentials, like `kafka-configs --entity-type users`:
the password is salted and hashed here (PBKDF2, the mechanism's hash) and only the salted password
travels. Offline (`--data-dir`, the broker stopped) it edits the data directory's credential file
directly — how the first user is made when every listener requires SASL (Kafka: `kafka-storage format
--add-scram`). The password is read from the terminal (twice) or from the first line of stdin, never
from the command line, where other users could see it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from oncelog.client import ClientError, connect
from oncelog.fs import OS_FILE_SYSTEM
from oncelog.report import Report, with_output
from oncelog.security.credentials import CredentialStore
from oncelog.security.scram import DEFAULT_ITERATIONS, MAX_ITERATIONS, MECHANISMS, make_credential, salted_password

MECHANISM_CODES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES = {code: name for name, code in MECHANISM_CODES.items()}


def add_parser(subparsers: Any, with_bootstrap: Any) -> None:
    users = subparsers.add_parser("users", help="add, list and delete SCRAM users (SASL SCRAM-SHA-256/512)")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    def target(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_bootstrap(parser)
        parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                            help="edit a stopped broker's data directory instead of asking a running broker")
        return parser

    add = target(actions.add_parser("add", help="create a user or set its password (reads it from the terminal "
                                               "or stdin)"))
    add.add_argument("name", metavar="USER")
    add.add_argument("--mechanism", choices=sorted(MECHANISMS), default="SCRAM-SHA-512")
    add.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS,
                     help=f"PBKDF2 iterations, 4096..{MAX_ITERATIONS} (default {DEFAULT_ITERATIONS})")
    listing = with_output(target(actions.add_parser("list", help="users and their mechanisms")))
    listing.add_argument("names", nargs="*", metavar="USER")
    delete = target(actions.add_parser("delete", help="remove a user's credentials"))
    delete.add_argument("name", metavar="USER")
    delete.add_argument("--mechanism", choices=sorted(MECHANISMS), default=None,
                        help="only this mechanism (default: every one the user has)")


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ClientError("the passwords differ")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise ClientError("the password is empty")
    return password


def run_users(args: argparse.Namespace) -> int:
    if args.data_dir is not None:
        return _offline(args)
    with connect(args) as client:
        if args.action == "add":
            salt = os.urandom(32)
            salted = salted_password(args.mechanism, _password(), salt, args.iterations)
            response = client.request(51, 0, {"deletions": [], "upsertions": [
                {"name": args.name, "mechanism": MECHANISM_CODES[args.mechanism], "iterations": args.iterations,
                 "salt": salt, "salted_password": salted}]})
            return _report(response.results, f"{args.name}: {args.mechanism} set")
        if args.action == "delete":
            mechanisms = [args.mechanism] if args.mechanism else _described(client, args.name)
            response = client.request(51, 0, {"upsertions": [], "deletions": [
                {"name": args.name, "mechanism": MECHANISM_CODES[m]} for m in mechanisms]})
            return _report(response.results, f"{args.name}: {', '.join(mechanisms)} deleted")
        response = client.request(50, 0, {"users": [{"name": name} for name in args.names] or None})
        if int(response.error_code) != 0:
            raise ClientError(f"the broker refused: {response.error_message}")
        status = 0
        listed: list[Any] = []
        for result in response.results:
            if int(result.error_code) != 0:
                print(f"{result.user}: {result.error_message}", file=sys.stderr)
                status = 1
                continue
            listed += [(result.user, MECHANISM_NAMES.get(int(info.mechanism), "?"), int(info.iterations))
                       for info in result.credential_infos]
            if args.output == "json":
                continue
            print(f"{result.user}\t" + ", ".join(f"{MECHANISM_NAMES.get(int(info.mechanism), '?')} "
                                                 f"(iterations {info.iterations})" for info in result.credential_infos))
        if args.output == "json":
            print(Report().add("users", ["USER", "MECHANISM", "ITERATIONS"], listed).render("json"))
        return status


def _described(client: Any, name: str) -> list[str]:
    response = client.request(50, 0, {"users": [{"name": name}]})
    result = response.results[0] if response.results else None
    if int(response.error_code) != 0 or result is None or int(result.error_code) != 0:
        raise ClientError(f"{name}: {(result.error_message if result else None) or response.error_message}")
    return [MECHANISM_NAMES[int(info.mechanism)] for info in result.credential_infos]


def _report(results: Any, done: str) -> int:
    failed = [f"{r.user}: {r.error_message or r.error_code}" for r in results if int(r.error_code) != 0]
    for line in failed:
        print(line, file=sys.stderr)
    if not failed:
        print(done)
    return 1 if failed else 0


def _offline(args: argparse.Namespace) -> int:
    directory: Path = args.data_dir
    if not directory.is_dir():
        raise ClientError(f"{directory} is not a data directory")
    release = OS_FILE_SYSTEM.lock(directory / ".lock")
    if release is None:
        raise ClientError(f"a broker is running on {directory}: stop it, or use --bootstrap to ask it")
    try:
        store = CredentialStore(OS_FILE_SYSTEM, directory)
        store.load()
        users = store.users()
        if args.action == "add":
            if not 4096 <= args.iterations <= MAX_ITERATIONS:
                raise ClientError(f"--iterations must be within 4096..{MAX_ITERATIONS}")
            store.apply([(args.name, make_credential(args.mechanism, _password(), args.iterations))], [])
            print(f"{args.name}: {args.mechanism} set")
        elif args.action == "delete":
            mechanisms = [args.mechanism] if args.mechanism else sorted(users.get(args.name, {}))
            if not mechanisms or any(m not in users.get(args.name, {}) for m in mechanisms):
                raise ClientError(f"{args.name} has no such credentials")
            store.apply([], [(args.name, mechanism) for mechanism in mechanisms])
            print(f"{args.name}: {', '.join(mechanisms)} deleted")
        else:
            for name in args.names or sorted(users):
                if name not in users:
                    print(f"{name}: no credentials", file=sys.stderr)
                    return 1
                print(f"{name}\t" + ", ".join(f"{mechanism} (iterations {credential.iterations})"
                                              for mechanism, credential in sorted(users[name].items())))
    finally:
        release()
    return 0

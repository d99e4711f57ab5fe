"""`oncelog acls add|list|remove`: Kafka's ACLs through CreateAcls, DescribeAcls and DeleteAcls, as
`kafka-acls` manages them (`--command-config` for a secured listener)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from oncelog.client import ClientError, connect
from oncelog.report import Report, with_output
from oncelog.security.acl import CLUSTER_NAME, Operation, PatternType, Permission, ResourceType

OPERATIONS = sorted(op.name for op in Operation if op not in (Operation.UNKNOWN, Operation.ANY))


def add_parser(subparsers: Any, with_bootstrap: Any) -> None:
    acls = subparsers.add_parser("acls", help="add, list and remove ACLs (with authorizer.class.name set)")
    actions = acls.add_subparsers(dest="action", required=True, metavar="ACTION")

    def resource(parser: argparse.ArgumentParser, required: bool) -> argparse.ArgumentParser:
        with_bootstrap(parser)
        which = parser.add_mutually_exclusive_group(required=required)
        which.add_argument("--topic", metavar="NAME", help="a topic ('*' for every topic)")
        which.add_argument("--group", metavar="NAME", help="a consumer group")
        which.add_argument("--transactional-id", metavar="ID", help="a transactional id")
        which.add_argument("--cluster", action="store_true", help="the cluster")
        parser.add_argument("--prefixed", action="store_true", help="the name is a prefix (PREFIXED pattern)")
        return parser

    add = resource(actions.add_parser("add", help="allow (or with --deny, deny) operations"), True)
    add.add_argument("--principal", required=True, help="who, e.g. User:alice, or User:* for everyone")
    add.add_argument("--host", default="*", help="from which address (default: any)")
    add.add_argument("--operation", action="append", required=True, type=str.upper, choices=OPERATIONS,
                     metavar="OPERATION", help=f"one of {', '.join(OPERATIONS)} (repeatable)")
    add.add_argument("--deny", action="store_true", help="a DENY ACL (deny wins over allow)")
    for name, help_text in (("list", "the ACLs, optionally of one resource or principal"),
                            ("remove", "remove the ACLs matching the filter")):
        parser = resource(actions.add_parser(name, help=help_text), False)
        parser.add_argument("--principal", default=None)
        parser.add_argument("--operation", default=None, type=str.upper, choices=OPERATIONS, metavar="OPERATION")
        if name == "list":
            with_output(parser)


def _resource(args: argparse.Namespace) -> tuple[ResourceType, str | None]:
    if args.topic is not None:
        return ResourceType.TOPIC, args.topic
    if args.group is not None:
        return ResourceType.GROUP, args.group
    if args.transactional_id is not None:
        return ResourceType.TRANSACTIONAL_ID, args.transactional_id
    if args.cluster:
        return ResourceType.CLUSTER, CLUSTER_NAME
    return ResourceType.ANY, None


def run_acls(args: argparse.Namespace) -> int:
    resource_type, name = _resource(args)
    pattern = PatternType.PREFIXED if args.prefixed else PatternType.LITERAL
    with connect(args) as client:
        if args.action == "add":
            permission = Permission.DENY if args.deny else Permission.ALLOW
            response = client.request(30, 3, {"creations": [
                {"resource_type": resource_type, "resource_name": name, "resource_pattern_type": pattern,
                 "principal": args.principal, "host": args.host, "operation": Operation[op],
                 "permission_type": permission}
                for op in args.operation]})
            failed = [r.error_message or str(r.error_code) for r in response.results if int(r.error_code) != 0]
            for message in dict.fromkeys(failed):
                print(f"oncelog: {message}", file=sys.stderr)
            if not failed:
                print(f"added {len(args.operation)} ACL(s)")
            return 1 if failed else 0
        filter_fields = {
            "resource_type_filter": resource_type, "resource_name_filter": name,
            "pattern_type_filter": pattern if name is not None else PatternType.ANY,
            "principal_filter": args.principal, "host_filter": None,
            "operation": Operation[args.operation] if args.operation else Operation.ANY,
            "permission_type": Permission.ANY}
        if args.action == "remove":
            response = client.request(31, 3, {"filters": [filter_fields]})
            result = response.filter_results[0]
            if int(result.error_code) != 0:
                raise ClientError(result.error_message or f"error {result.error_code}")
            for acl in result.matching_acls:
                print("removed " + _line(acl.resource_type, acl.resource_name, acl.pattern_type, acl))
            return 0
        response = client.request(29, 3, filter_fields)
        if int(response.error_code) != 0:
            raise ClientError(response.error_message or f"error {response.error_code}")
        if args.output == "json":
            rows: list[Any] = [
                (Permission(int(acl.permission_type)).name, acl.principal, acl.host, Operation(int(acl.operation)).name,
                 ResourceType(int(found.resource_type)).name, PatternType(int(found.pattern_type)).name,
                 found.resource_name) for found in response.resources for acl in found.acls]
            print(Report().add("acls", ["PERMISSION", "PRINCIPAL", "HOST", "OPERATION", "RESOURCE TYPE",
                                        "PATTERN TYPE", "RESOURCE NAME"], rows).render("json"))
            return 0
        for found in response.resources:
            for acl in found.acls:
                print(_line(found.resource_type, found.resource_name, found.pattern_type, acl))
        return 0


def _line(resource_type: int, name: str, pattern: int, acl: Any) -> str:
    return (f"{Permission(int(acl.permission_type)).name}\t{acl.principal}\t{acl.host}\t"
            f"{Operation(int(acl.operation)).name}\t{ResourceType(int(resource_type)).name}:"
            f"{PatternType(int(pattern)).name}:{name}")

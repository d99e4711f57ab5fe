"""`oncelog groups list|describe|reset-offsets`: consumer groups of a running broker, as tables."""

from __future__ import annotations

import argparse
from typing import Any

from oncelog.admin import NotFound, _metadata, _offsets, print_report
from oncelog.client import ClientError, KafkaClient, connect
from oncelog.coordinator.group.assignment import assigned_partitions
from oncelog.report import Report

OFFSET_COMMIT, OFFSET_FETCH, DESCRIBE_GROUPS, LIST_GROUPS = 8, 9, 15, 16
LATEST, EARLIEST = -1, -2


def _list(client: KafkaClient) -> Report:
    response = client.request(LIST_GROUPS, 4, {"states_filter": []})
    rows: list[Any] = sorted((g.group_id, g.group_state, g.protocol_type) for g in response.groups)
    return Report(empty="no groups").add("groups", ["GROUP", "STATE", "PROTOCOL TYPE"], rows)


def _describe_group(client: KafkaClient, group_id: str) -> Any:
    response = client.request(DESCRIBE_GROUPS, 5, {"groups": [group_id], "include_authorized_operations": False})
    return response.groups[0]


def _committed(client: KafkaClient, group_id: str) -> dict[tuple[str, int], int]:
    response = client.request(OFFSET_FETCH, 7, {"group_id": group_id, "topics": None, "require_stable": False})
    return {(t.name, int(p.partition_index)): int(p.committed_offset) for t in response.topics for p in t.partitions}


def _describe(client: KafkaClient, group_id: str) -> Report:
    group = _describe_group(client, group_id)
    committed = _committed(client, group_id)
    if group.group_state == "Dead" and not committed:
        raise NotFound(f"group {group_id} does not exist")
    owners: dict[tuple[str, int], str] = {}
    member_rows: list[Any] = []
    for member in group.members:
        try:
            assignment = assigned_partitions(member.member_assignment)
        except ValueError:
            assignment = {}
        for topic, assigned in assignment.items():
            for partition in assigned:
                owners[(topic, partition)] = member.member_id
        described = ", ".join(f"{t}:{','.join(map(str, sorted(p)))}" for t, p in sorted(assignment.items()))
        member_rows.append((member.member_id, member.group_instance_id or "", member.client_id, member.client_host,
                            described or "-"))
    report = Report({"Group": group_id, "state": group.group_state, "protocol": group.protocol_data or "-",
                     "members": len(group.members)})
    report.add("member_list", ["MEMBER ID", "INSTANCE ID", "CLIENT ID", "HOST", "ASSIGNMENT"], member_rows)
    partitions = sorted(set(committed) | set(owners))
    ends: dict[tuple[str, int], int] = {}
    for topic in sorted({t for t, _ in partitions}):
        count = max(p for t, p in partitions if t == topic) + 1
        for partition, offset in _offsets(client, topic, count, LATEST).items():
            ends[(topic, partition)] = offset
    rows: list[Any] = []
    for topic, partition in partitions:
        current = committed.get((topic, partition), -1)
        end = ends.get((topic, partition), -1)
        lag = end - current if current >= 0 and end >= 0 else "-"
        rows.append((topic, partition, current if current >= 0 else "-", end, lag,
                     owners.get((topic, partition), "-")))
    return report.add("offsets", ["TOPIC", "PARTITION", "CURRENT OFFSET", "LOG END OFFSET", "LAG", "OWNER"], rows)


def _reset(client: KafkaClient, group_id: str, topic: str, target: str, offset: int | None, execute: bool
           ) -> Report:
    group = _describe_group(client, group_id)
    if group.group_state not in ("Empty", "Dead"):
        raise ClientError(f"group {group_id} is {group.group_state}: offsets can only be reset for an empty group "
                          "(stop its consumers first)")
    metadata = _metadata(client, [topic])
    entry = metadata.topics[0]
    if entry.error_code != 0:
        raise NotFound(f"topic {topic}: {entry.error_code.name.upper()}")
    count = len(entry.partitions)
    if target == "offset":
        assert offset is not None
        new = dict.fromkeys(range(count), offset)
        earliest, latest = _offsets(client, topic, count, EARLIEST), _offsets(client, topic, count, LATEST)
        for partition, value in new.items():  # Kafka clamps to the log's range too
            new[partition] = min(max(value, earliest[partition]), latest[partition])
    else:
        new = _offsets(client, topic, count, EARLIEST if target == "earliest" else LATEST)
    rows: list[Any] = [(topic, p, o) for p, o in sorted(new.items())]
    plan = Report().add("offsets", ["TOPIC", "PARTITION", "NEW OFFSET"], rows)
    if not execute:
        plan.note = "nothing changed: add --execute to apply these offsets"
        return plan
    response = client.request(OFFSET_COMMIT, 8, {
        "group_id": group_id, "generation_id_or_member_epoch": -1, "member_id": "", "group_instance_id": None,
        "topics": [{"name": topic, "partitions": [
            {"partition_index": p, "committed_offset": o, "committed_leader_epoch": -1, "committed_metadata": ""}
            for p, o in sorted(new.items())]}]})
    errors = [f"{topic}-{p.partition_index}: {p.error_code.name.upper()}"
              for t in response.topics for p in t.partitions if p.error_code != 0]
    if errors:
        raise ClientError("reset failed: " + "; ".join(errors))
    return plan


def run_groups(args: argparse.Namespace) -> int:
    with connect(args) as client:
        if args.action == "list":
            output: Report = _list(client)
        elif args.action == "describe":
            output = _describe(client, args.group)
        else:
            target = "earliest" if args.to_earliest else "latest" if args.to_latest else "offset"
            output = _reset(client, args.group, args.topic, target, args.to_offset, args.execute)
    print_report(output, args)
    return 0

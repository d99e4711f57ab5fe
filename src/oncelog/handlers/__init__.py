"""The dispatch table: one module per API key, each stating its versions and behaviour.

An API is advertised by ApiVersions if and only if it is in `HANDLERS`, and everything served is there
(WriteTxnMarkers too: Kafka's brokers advertise it, and Kafka's admin client refuses to send it to a
broker that does not, so `kafka-transactions.sh abort` needs it listed).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    alter_configs,
    alter_partition_reassignments,
    alter_user_scram_credentials,
    api_versions,
    create_acls,
    create_partitions,
    create_topics,
    delete_acls,
    delete_groups,
    delete_records,
    delete_topics,
    describe_acls,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_log_dirs,
    describe_producers,
    describe_transactions,
    describe_user_scram_credentials,
    elect_leaders,
    end_txn,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    list_partition_reassignments,
    list_transactions,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
    txn_offset_commit,
    write_txn_markers,
)
from .base import ApiHandler

_MODULES: tuple[ModuleType, ...] = (
    produce,
    fetch,
    list_offsets,
    metadata,
    api_versions,
    create_acls,
    create_topics,
    delete_topics,
    offset_for_leader_epoch,
    describe_configs,
    describe_cluster,
    init_producer_id,
    describe_producers,
    find_coordinator,
    join_group,
    sync_group,
    heartbeat,
    leave_group,
    offset_commit,
    offset_fetch,
    describe_groups,
    list_groups,
    delete_groups,
    offset_delete,
    add_partitions_to_txn,
    add_offsets_to_txn,
    end_txn,
    txn_offset_commit,
    describe_transactions,
    list_transactions,
    sasl_handshake,
    sasl_authenticate,
    describe_user_scram_credentials,
    alter_user_scram_credentials,
    describe_acls,
    create_acls,
    delete_acls,
    write_txn_markers,
    create_partitions,
    delete_records,
    alter_configs,
    incremental_alter_configs,
    describe_log_dirs,
    elect_leaders,
    alter_partition_reassignments,
    list_partition_reassignments,
)


def _handler(module: ModuleType) -> ApiHandler:
    version_min, version_max = module.VERSIONS
    name = module.__name__.rsplit(".", 1)[1]
    return ApiHandler(module.API_KEY, name, version_min, version_max, module.handle,
                      getattr(module, "error_response", None))


HANDLERS: dict[int, ApiHandler] = {module.API_KEY: _handler(module) for module in _MODULES}


def _group_id(request: Any) -> list[str]:
    return [str(request.group_id)]


GROUP_IDS: dict[int, Callable[[Any], list[str]]] = {
    **{module.API_KEY: _group_id for module in (join_group, sync_group, heartbeat, leave_group, offset_commit,
                                                offset_fetch, offset_delete, txn_offset_commit)},
    describe_groups.API_KEY: lambda request: [str(group) for group in request.groups],
    delete_groups.API_KEY: lambda request: [str(group) for group in request.groups_names],
}
"""The groups each group API is about: a broker that does not coordinate them (yet) answers
NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS before the handler runs (`Broker.group_gate`)."""

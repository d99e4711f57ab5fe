"""The PostgreSQL schema, created and migrated by oncelog itself.

Theory of operation: `MIGRATIONS` is an append-only list; entry i moves the schema from version i to
i + 1. `migrate` runs at broker start inside one transaction holding a transaction-level advisory lock,
so brokers starting together migrate once and the rest see the result; a database at a newer version
than this code knows is refused (an older broker must not write a schema it does not understand).

Tables (offsets are always taken from `partition_log.next_offset` under its row lock, never from a
sequence, so commit order is offset order and there are no holes):

- `topic`: name, id, partition count, config overrides; `collision_key` (name with '.' as '_') is
  unique, which enforces Kafka's collision rule atomically across brokers.
- `partition_log`: per partition, the next offset (log end offset = high watermark: a commit is durable
  on PostgreSQL's terms before anyone can read it) and the log start offset. Its row is the lock
  every writer of the partition takes.
- `batch`: one row per RecordBatch v2 as stored (offsets assigned), with the fields reads filter on.
- `producer_state`: per partition and producer id, Kafka's producer entry (epoch, last five batches'
  sequence/offset metadata, coordinator epoch, open transaction's first offset).
- `aborted_txn`: Kafka's `.txnindex` (producer id, first offset, last offset of an aborted transaction).
- `broker`: the brokers of the cluster, each with its listeners and last heartbeat (live = a heartbeat
  within `broker.session.timeout.ms`); `incarnation` tells a restarted broker from a second process
  that claims a live broker's id.
- `txn`, `txn_partition`: each transactional id's producer id, epoch and state, and the partitions of
  its ongoing transaction. States are Kafka's names; Prepare* never appears: EndTxn decides and writes
  every marker in one database transaction, so no marker can be half-written.
- `coordinator_lease`: which broker coordinates the groups of each `__consumer_offsets` partition, and
  the epoch of its lease; a coordinator's writes carry the epoch it took and are refused once another
  broker took the lease (a zombie coordinator cannot write).
- `cluster_meta`: the cluster id (Kafka's `meta.properties`), made by the first broker.
- `acl`, `scram_credential`: the cluster's ACLs and SCRAM credentials (salted keys, never passwords);
  every broker caches them and refreshes on a NOTIFY (`storage/postgres/security.py`).
- `producer_id_block`: a sequence of producer-id blocks (Kafka's `ProducerIdManager` hands out blocks
  too): block b covers ids [b × 1000, b × 1000 + 1000), so brokers never hand out the same id.
"""

from __future__ import annotations

from typing import Any

ADVISORY_LOCK_KEY = 0x6F6E63656C6F67  # "oncelog"

MIGRATIONS: list[str] = [
    # 0 → 1: the data plane.
    """
    CREATE TABLE oncelog_schema (version integer NOT NULL);
    INSERT INTO oncelog_schema VALUES (0);
    CREATE TABLE topic (
        name text PRIMARY KEY,
        topic_id uuid NOT NULL UNIQUE,
        partitions integer NOT NULL CHECK (partitions > 0),
        configs jsonb NOT NULL,
        collision_key text NOT NULL UNIQUE,
        created_ms bigint NOT NULL
    );
    CREATE TABLE partition_log (
        topic_id uuid NOT NULL,
        partition integer NOT NULL,
        next_offset bigint NOT NULL DEFAULT 0,
        log_start_offset bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, partition)
    );
    CREATE TABLE batch (
        topic_id uuid NOT NULL,
        partition integer NOT NULL,
        base_offset bigint NOT NULL,
        last_offset bigint NOT NULL,
        max_timestamp bigint NOT NULL,
        producer_id bigint NOT NULL,
        is_control boolean NOT NULL,
        size integer NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (topic_id, partition, base_offset)
    );
    CREATE INDEX batch_by_last_offset ON batch (topic_id, partition, last_offset);
    CREATE TABLE producer_state (
        topic_id uuid NOT NULL,
        partition integer NOT NULL,
        producer_id bigint NOT NULL,
        producer_epoch smallint NOT NULL,
        coordinator_epoch integer NOT NULL,
        last_timestamp bigint NOT NULL,
        txn_first_offset bigint NOT NULL,
        batches bigint[] NOT NULL,
        PRIMARY KEY (topic_id, partition, producer_id)
    );
    CREATE INDEX producer_state_open_txn ON producer_state (topic_id, partition, txn_first_offset)
        WHERE txn_first_offset >= 0;
    CREATE TABLE aborted_txn (
        topic_id uuid NOT NULL,
        partition integer NOT NULL,
        producer_id bigint NOT NULL,
        first_offset bigint NOT NULL,
        last_offset bigint NOT NULL,
        PRIMARY KEY (topic_id, partition, last_offset)
    );
    """,
    # 1 → 2: the cluster: live brokers, and producer ids handed out in blocks.
    """
    CREATE TABLE broker (
        broker_id integer PRIMARY KEY,
        incarnation uuid NOT NULL,
        endpoints jsonb NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE SEQUENCE producer_id_block START WITH 0 MINVALUE 0;
    CREATE TABLE cluster_meta (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        cluster_id text NOT NULL
    );
    """,
    # 2 → 3: transactions, and leases on the group coordinator's partitions.
    """
    CREATE TABLE txn (
        transactional_id text PRIMARY KEY,
        producer_id bigint NOT NULL,
        producer_epoch integer NOT NULL,
        last_producer_epoch integer NOT NULL DEFAULT -1,
        timeout_ms integer NOT NULL,
        state text NOT NULL,
        start_ms bigint NOT NULL DEFAULT -1,
        last_update_ms bigint NOT NULL
    );
    CREATE INDEX txn_ongoing ON txn (start_ms) WHERE state = 'Ongoing';
    CREATE TABLE txn_partition (
        transactional_id text NOT NULL REFERENCES txn ON DELETE CASCADE,
        topic text NOT NULL,
        partition integer NOT NULL,
        PRIMARY KEY (transactional_id, topic, partition)
    );
    CREATE TABLE coordinator_lease (
        topic text NOT NULL,
        partition integer NOT NULL,
        owner integer NOT NULL,
        epoch bigint NOT NULL,
        PRIMARY KEY (topic, partition)
    );
    """,
    # 1 → 2: security shared by the brokers.
    """
    CREATE TABLE acl (
        resource_type smallint NOT NULL,
        resource_name text NOT NULL,
        pattern_type smallint NOT NULL,
        principal text NOT NULL,
        host text NOT NULL,
        operation smallint NOT NULL,
        permission smallint NOT NULL,
        PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation, permission)
    );
    CREATE TABLE scram_credential (
        user_name text NOT NULL,
        mechanism text NOT NULL,
        salt bytea NOT NULL,
        iterations integer NOT NULL,
        stored_key bytea NOT NULL,
        server_key bytea NOT NULL,
        PRIMARY KEY (user_name, mechanism)
    );
    """,
    # 2 → 3: dynamic broker configs ("" = the cluster-wide default, else a broker id).
    """
    CREATE TABLE dynamic_config (
        entity text NOT NULL,
        name text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (entity, name)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer oncelog."""


def current_version(cursor: Any) -> int:
    cursor.execute("SELECT to_regclass('oncelog_schema') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute("SELECT version FROM oncelog_schema")
    return int(cursor.fetchone()[0])


def migrate(connection: Any) -> tuple[int, int]:
    """Bring the schema to `SCHEMA_VERSION` (psycopg connection, sync); returns (from, to) versions."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        start = current_version(cursor)
        if start > SCHEMA_VERSION:
            raise SchemaTooNew(f"the database schema is at version {start}, newer than this oncelog's "
                               f"{SCHEMA_VERSION}: upgrade oncelog on this host")
        for version in range(start, SCHEMA_VERSION):
            cursor.execute(MIGRATIONS[version])
            cursor.execute("UPDATE oncelog_schema SET version = %s", (version + 1,))
    return start, SCHEMA_VERSION

"""The PostgreSQL security store when the database fails: a change the database refuses is answered as
an error and changes nothing (not the table, not the cache); a connection the database drops is made
again; afterwards changes work."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from oncelog.security.acl import AclBinding, Operation, PatternType, Permission, ResourceType
from oncelog.storage.postgres.schema import migrate
from oncelog.storage.postgres.security import PostgresSecurityStore

pytestmark = pytest.mark.timeout(60)


def _binding(name: str) -> AclBinding:
    return AclBinding(ResourceType.TOPIC, name, PatternType.LITERAL, "User:alice", "*", Operation.READ,
                      Permission.ALLOW)


def test_a_refused_or_dropped_database_change_is_an_error_and_changes_nothing(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        migrate(admin)

        async def scenario() -> None:
            store = PostgresSecurityStore(database_url)
            await store.open()
            try:
                assert await _settle(store.create_acls([_binding("before")])) is None
                admin.execute("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; "
                              "END $$ LANGUAGE plpgsql")
                admin.execute("CREATE TRIGGER refuse BEFORE INSERT ON acl FOR EACH ROW EXECUTE FUNCTION refuse()")
                refused = await _settle(store.create_acls([_binding("one"), _binding("two")]))
                assert isinstance(refused, OSError) and "disk full" in str(refused)
                assert [b.resource_name for b in store.acls()] == ["before"]
                assert admin.execute("SELECT count(*) FROM acl").fetchone() == (1,)
                admin.execute("DROP TRIGGER refuse ON acl")
                admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = "
                              "current_database() AND pid <> pg_backend_pid()")  # the store's connections die
                assert await _settle(store.create_acls([_binding("after")])) is None  # made again
                assert sorted(b.resource_name for b in store.acls()) == ["after", "before"]
            finally:
                await store.close()

        asyncio.run(scenario())


async def _settle(completion: object) -> object:
    from oncelog.awaiting import completed

    return await completed(completion)  # type: ignore[arg-type]

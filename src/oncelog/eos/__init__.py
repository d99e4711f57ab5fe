"""Exactly-once pipelines on any Kafka-compatible cluster, built on confluent-kafka.

- `Processor`: consume → transform → produce, with the consumed offsets committed in the same Kafka
  transaction as the outputs (KIP-447 group metadata), so each input affects the outputs exactly once.
- `DatabaseSink`: consume (read_committed) → write rows to SQLite or PostgreSQL, storing the next offset
  of each partition in the same database transaction as the rows, fenced per partition.

Both need `pip install 'oncelog[eos]'` (confluent-kafka; psycopg for PostgreSQL).
"""

from .processor import Output, Processor, ProcessorConfig, ProcessorStats
from .sink import DatabaseSink, SinkConfig, SinkFenced, SinkStats

__all__ = [
    "DatabaseSink",
    "Output",
    "Processor",
    "ProcessorConfig",
    "ProcessorStats",
    "SinkConfig",
    "SinkFenced",
    "SinkStats",
]

"""oncelog: a Kafka-compatible streaming log with exactly-once semantics."""

__version__ = "0.1.0"

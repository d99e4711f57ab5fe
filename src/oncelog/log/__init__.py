"""Partition logs on local disk in Kafka's layout: segments, sparse indexes, recovery, checkpoints.

`index` holds the sparse offset and time indexes, `segment` one `.log` file with its indexes, `partition`
the ordered segments of one partition (append, read, roll, retention, recovery on open), `checkpoint`
Kafka's offset checkpoint files, and `manager` every partition under one data directory.
"""

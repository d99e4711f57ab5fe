"""Names for the integers that are easy to swap: offsets, ids, epochs, sequences."""

from __future__ import annotations

from typing import NewType

Offset = NewType("Offset", int)
"""A record offset in a partition (never a byte position: that is a `position`)."""

ProducerId = NewType("ProducerId", int)
ProducerEpoch = NewType("ProducerEpoch", int)
Sequence = NewType("Sequence", int)
TopicName = NewType("TopicName", str)

NO_PRODUCER_ID = ProducerId(-1)
NO_PRODUCER_EPOCH = ProducerEpoch(-1)
NO_SEQUENCE = Sequence(-1)

"""Sans-IO Kafka protocol: framing, headers, message codecs, RecordBatch v2."""

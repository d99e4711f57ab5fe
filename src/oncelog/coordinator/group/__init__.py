"""The classic group coordinator: membership, rebalances and committed offsets in `__consumer_offsets`."""

"""The asyncio layer: listener, connections, flusher, long-poll wake-ups. The only code that awaits."""

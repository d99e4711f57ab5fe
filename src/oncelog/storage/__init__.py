"""Where partitions live: the storage seam (`api`) and its backends (`local`, `postgres`)."""

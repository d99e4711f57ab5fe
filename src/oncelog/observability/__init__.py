"""Seeing inside a running broker: Prometheus metrics over HTTP."""

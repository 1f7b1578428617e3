"""Metrics for operators: the Prometheus text format, to a textfile or a loopback port."""

"""Latency measurement: statistics, the speed probe, interleaved references."""

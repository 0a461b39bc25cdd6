"""Benchmarking and accuracy-regression harness for quantized YOLO detectors."""

__version__ = "0.1.0"

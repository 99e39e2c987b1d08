"""Batch's autoscale formula language: syntax, values, functions, samples and evaluation; no I/O."""

"""Shared memory: record layouts, atomics, segments, SPSC rings, wait strategies, seqlock tables."""

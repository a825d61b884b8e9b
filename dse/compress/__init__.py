"""Compression of candidates: candidate keys, quantizers and quantized layers, pruning, training hooks."""

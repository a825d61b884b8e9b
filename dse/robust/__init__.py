"""Robustness: the attack kernel, attacks, the accuracy-under-attack loop, suites, masking checks, curves, transfer."""

"""Artifacts on disk: the verified cache, and ELF inspection (with decompression) of modules and probes."""

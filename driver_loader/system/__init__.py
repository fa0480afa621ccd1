"""Helpers the edges share, one home each: atomic writes, bounded reads, the subprocess runner, syscall numbers."""

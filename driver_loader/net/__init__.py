"""The network edge: one HTTP session, checksum documents, repository indexes and the artifact fetcher."""

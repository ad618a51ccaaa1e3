"""Air-gapped networks: prefetch from go.sum, verifiable bundles with checksum data, offline serving."""

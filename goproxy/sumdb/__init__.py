"""The Go checksum database: verifier keys, signed notes, log proofs, h1 hashes and verified lookups."""

//! Consensus tests on real PostgreSQL servers (being written).

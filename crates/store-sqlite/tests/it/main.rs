//! Integration tests: the backend-agnostic `Store` conformance suite run
//! against the SQLite store (in memory and file-backed), plus what is
//! specific to SQLite (files, persistence, corruption detection).

mod audit;
mod sqlite;
mod suite;

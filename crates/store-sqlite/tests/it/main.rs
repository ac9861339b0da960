//! Integration tests: the shared store conformance suite
//! (`cc-store-conformance`) run against the SQLite store (in memory and
//! file-backed), plus what is specific to SQLite (files, persistence,
//! corruption detection, the audit table's triggers).

mod audit;
mod sqlite;

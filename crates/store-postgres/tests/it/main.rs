//! Integration tests on a real PostgreSQL: the shared store conformance
//! suite (`cc-store-conformance`), plus what is specific to PostgreSQL
//! (triggers, migrations, connection errors, two stores on one database).
//!
//! The server comes from `CLAUDECLUSTER_TEST_DATABASE_URL` (scripts/test.sh
//! starts a private cluster and sets it; `scripts/postgres.sh` does it by
//! hand). Each test gets its own schema with a unique name, dropped after.
//! Unset, the tests fail under `CI=true` and are skipped (saying so)
//! elsewhere.

mod postgres;
mod support;

//! A throw-away schema per test on the server named by
//! `CLAUDECLUSTER_TEST_DATABASE_URL`.

use cc_store_postgres::{Config, PostgresStore};

pub const URL_VAR: &str = "CLAUDECLUSTER_TEST_DATABASE_URL";

/// The test server's URL; `None` (after saying so) when it is not set
/// outside CI. Under `CI=true` a missing server fails the test.
pub fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{URL_VAR} is not set: CI must run the PostgreSQL tests (scripts/test.sh starts a server)")
        }
        _ => {
            eprintln!("skipped: {URL_VAR} is not set (scripts/postgres.sh starts a server)");
            None
        }
    }
}

/// A schema that exists for one test; dropped with everything in it when
/// the guard goes.
pub struct Schema {
    config: Config,
    pub name: String,
}

impl Schema {
    pub async fn create(url: &str) -> Self {
        let config: Config = url.parse().expect("test database URL");
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("randomness");
        let name = format!(
            "cc_test_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let client = connect(&config).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        Self { config, name }
    }

    /// A configuration whose connections use only this schema, and carry
    /// its name as their application name (to find them on the server).
    pub fn config(&self) -> Config {
        let mut c = self.config.clone();
        c.options(format!("-c search_path={}", self.name));
        c.application_name(&self.name);
        c
    }

    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(self.config(), 4)
            .await
            .expect("connect store")
    }

    /// A plain connection into the schema, to look behind the store.
    pub async fn raw(&self) -> tokio_postgres::Client {
        connect(&self.config()).await
    }
}

async fn connect(config: &Config) -> tokio_postgres::Client {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs outside async: a short-lived runtime on its own thread.
        // The test's runtime must be multi-threaded, so that its other
        // workers still drive the store's connections (a rollback in
        // flight) while this one waits.
        let config = self.config.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = connect(&config).await;
                client.batch_execute(&sql).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

/// A fresh store in its own schema (the conformance suite's `fresh`).
pub async fn fresh() -> Option<(Schema, PostgresStore)> {
    let url = url()?;
    let schema = Schema::create(&url).await;
    let store = schema.store().await;
    Some((schema, store))
}

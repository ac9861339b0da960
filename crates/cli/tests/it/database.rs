//! `--database-url`: `serve` and `admin` on PostgreSQL (the server named by
//! `CLAUDECLUSTER_TEST_DATABASE_URL`, one throw-away schema per test;
//! unset, the tests fail under `CI=true` and are skipped elsewhere), and a
//! database that cannot be reached stopping `serve` with a clear message.

use super::{cli, describe, output, spawn_serve, stderr, stdout};
use cc_core::identity::{hash_token, IdentityStore};
use cc_store_postgres::PostgresStore;
use std::process::Stdio;

const URL_VAR: &str = "CLAUDECLUSTER_TEST_DATABASE_URL";
const ADMIN: &str = "admin-token-0123456789";

/// `serve` on the database at `database_url` with [`ADMIN`], its resources
/// under a prefix of `schema`'s own (its orphan sweep sees nothing else).
async fn serve_on(
    schema: &Schema,
    database_url: &str,
    image: &str,
    home: &std::path::Path,
    data: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut c = cli(home);
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ])
    .args(["--image", image, "--admin-token", ADMIN])
    .args([
        "--resource-prefix",
        &format!("{}-", schema.name.replace('_', "-")),
    ])
    .arg("--data-dir")
    .arg(data)
    .arg("--secret-key-file")
    .arg(secret_key_file(home)?)
    .env("CLAUDECLUSTER_DATABASE_URL", database_url)
    .stderr(Stdio::null());
    spawn_serve(c).await
}

/// A shared secret for `serve --database-url` (replicas must share one).
fn secret_key_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("secret.key");
    if !path.exists() {
        std::fs::write(&path, cc_core::Token::generate().expose())?;
    }
    Ok(path)
}

/// A schema of its own on the test server, dropped with the guard; `url`
/// reaches only it (through `search_path`).
pub(crate) struct Schema {
    base: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

impl Schema {
    pub(crate) async fn create() -> Option<Self> {
        let base = match std::env::var(URL_VAR) {
            Ok(u) if !u.is_empty() => u,
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{URL_VAR} is not set: CI must run the PostgreSQL tests")
            }
            _ => {
                eprintln!("skipped: {URL_VAR} is not set (scripts/postgres.sh starts a server)");
                return None;
            }
        };
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("randomness");
        let name = format!(
            "cc_test_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        exec(&base, &format!("CREATE SCHEMA {name}")).await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Some(Self { base, name, url })
    }
}

async fn exec(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.batch_execute(sql).await.expect(sql);
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Outside async: a runtime of its own on another thread (the
        // tests run multi-threaded, so their connections still close).
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(exec(&base, &sql))
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_an_unreachable_database_stops_with_a_clear_message() -> anyhow::Result<()> {
    let home = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let mut c = cli(home.path());
    c.args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg("postgres://cc:sekrit@127.0.0.1:1/cc")
        .arg("--secret-key-file")
        .arg(secret_key_file(home.path())?)
        .arg("--data-dir")
        .arg(data.path());
    let out = output(&mut c).await?;
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("opening the PostgreSQL database") && err.contains("connecting to PostgreSQL"),
        "{}",
        describe(&out)
    );
    assert!(!err.contains("sekrit"), "the password leaked: {err}");
    Ok(())
}

/// Replicas sharing a database must share their keys: without one, `serve`
/// stops before it connects, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_database_without_a_shared_key_stops_with_a_clear_message() -> anyhow::Result<()>
{
    let home = tempfile::tempdir()?;
    let mut c = cli(home.path());
    c.args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg("postgres://cc:sekrit@127.0.0.1:1/cc")
        .arg("--data-dir")
        .arg(home.path());
    let out = output(&mut c).await?;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("--database-url needs --secret-key-file"),
        "{}",
        describe(&out)
    );
    std::fs::write(home.path().join("short.key"), "too short")?;
    let mut c = cli(home.path());
    c.args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg("postgres://cc:sekrit@127.0.0.1:1/cc")
        .arg("--secret-key-file")
        .arg(home.path().join("short.key"))
        .arg("--data-dir")
        .arg(home.path());
    let out = output(&mut c).await?;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("needs at least 32"),
        "{}",
        describe(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_tokens_in_the_database() -> anyhow::Result<()> {
    let Some(schema) = Schema::create().await else {
        return Ok(());
    };
    let home = tempfile::tempdir()?;
    let parent = tempfile::tempdir()?;
    // Not there yet: only the audit copy will be written to it.
    let data = parent.path().join("data");
    let admin = |args: &[&str]| {
        let mut c = cli(home.path());
        c.arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("CLAUDECLUSTER_DATABASE_URL", &schema.url);
        c
    };
    let out = output(&mut admin(&["token", "create", "--user", "alice"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    let token = stdout(&out).trim().to_owned();

    // The token is in PostgreSQL (and not in a SQLite file).
    let store = PostgresStore::connect(&schema.url).await?;
    let rec = store
        .token_by_hash(&hash_token(&token))
        .await?
        .expect("stored in PostgreSQL");
    assert_eq!(rec.user, "alice");
    assert!(!data.join(cc_store_sqlite::DB_FILE).exists());
    assert!(data.join("audit.jsonl").exists());

    let out = output(&mut admin(&["token", "list"])).await?;
    assert!(stdout(&out).contains(&rec.id), "{}", describe(&out));
    let out = output(&mut admin(&["erase-user", "alice"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(store.list_tokens().await?.is_empty());
    let out = output(&mut admin(&["audit", "verify"])).await?;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("2 records"), "{}", describe(&out));
    Ok(())
}

/// `serve --database-url` starts on PostgreSQL and serves what is stored
/// there (needs Docker and the worker image: `CLAUDECLUSTER_TEST_IMAGE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_from_the_database() -> anyhow::Result<()> {
    let Ok(image) = std::env::var("CLAUDECLUSTER_TEST_IMAGE") else {
        eprintln!("skipped: CLAUDECLUSTER_TEST_IMAGE is not set");
        return Ok(());
    };
    let Some(schema) = Schema::create().await else {
        return Ok(());
    };
    let home = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    // A token made beforehand, straight in the database.
    let store = PostgresStore::connect(&schema.url).await?;
    let new = cc_core::identity::NewToken::generate(
        "bob",
        cc_core::Role::User,
        None,
        std::time::SystemTime::now(),
    );
    store.insert_token(&new.record).await?;

    let (mut child, base) =
        serve_on(&schema, &schema.url, &image, home.path(), data.path()).await?;
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    let tokens: serde_json::Value = http
        .get(format!("{base}/api/v1/admin/tokens"))
        .bearer_auth(ADMIN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(
        tokens.to_string().contains(&new.record.id),
        "the server lists the token stored in PostgreSQL: {tokens}"
    );
    child.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_503_while_the_database_is_lost_and_recovers() -> anyhow::Result<()> {
    let Ok(image) = std::env::var("CLAUDECLUSTER_TEST_IMAGE") else {
        eprintln!("skipped: CLAUDECLUSTER_TEST_IMAGE is not set");
        return Ok(());
    };
    let Some(schema) = Schema::create().await else {
        return Ok(());
    };
    // The server reaches the database only through a relay the test cuts.
    let mut url = url::Url::parse(&schema.url)?;
    let relay = cc_testkit::tcp_relay::TcpRelay::start(format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    ))
    .await?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(relay.port()))
        .map_err(|()| anyhow::anyhow!("a port"))?;
    let home = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let (mut child, base) =
        serve_on(&schema, url.as_str(), &image, home.path(), data.path()).await?;
    let http = reqwest::Client::new();
    let sessions = || {
        http.get(format!("{base}/api/v1/sessions"))
            .bearer_auth(ADMIN)
            .send()
    };
    assert_eq!(sessions().await?.status(), 200);

    relay.cut(true);
    for _ in 0..2 {
        let r = sessions().await?;
        assert_eq!(r.status(), 503, "a lost database is a 503");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["code"], "unavailable", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("session store is unavailable")),
            "{body}"
        );
    }
    let ready = http.get(format!("{base}/readyz")).send().await?;
    assert_eq!(ready.status(), 503);

    relay.cut(false);
    let mut back = false;
    for _ in 0..3 {
        if sessions().await?.status() == 200 {
            back = true;
            break;
        }
    }
    assert!(back, "the server answers again once the database is back");
    assert_eq!(
        http.get(format!("{base}/readyz")).send().await?.status(),
        200
    );
    child.kill().await?;
    Ok(())
}

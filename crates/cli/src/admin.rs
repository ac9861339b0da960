//! `claudecluster admin`: API tokens, the audit chain and erasing a user,
//! done directly on the server's store through the store traits — the
//! SQLite file in the data directory, or the PostgreSQL database given by
//! `--database-url` (the server may be running: either backend serialises
//! the writes).
//!
//! Every change made here is itself audited, with actor `cli`.

use crate::store::AnyStore;
use anyhow::{bail, Context};
use cc_core::audit::{self, AuditEvent, AuditFilter, AuditRecord, AuditStore};
use cc_core::identity::{check_user, IdentityStore, NewToken, Role};
use cc_core::{now, rfc3339};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Actor of audit records written by this command.
const CLI_ACTOR: &str = "cli";
/// Name of the JSON-lines copy of the audit log in the data directory.
pub const AUDIT_JSONL: &str = "audit.jsonl";

#[derive(Args)]
pub struct DataDir {
    /// The server's data directory.
    #[arg(
        long,
        env = "CLAUDECLUSTER_DATA_DIR",
        default_value = "./claudecluster-data"
    )]
    data_dir: PathBuf,
    /// The server's PostgreSQL database, when it runs with one (the data
    /// directory then holds only the audit copy).
    #[arg(
        long,
        env = "CLAUDECLUSTER_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Erase one user's data: their sessions, logs and tokens are deleted,
    /// and their name and IP redacted from the audit log
    /// (whose chain stays verifiable).
    #[command(after_help = "Example:\n  claudecluster admin erase-user alice --data-dir ./data")]
    EraseUser {
        user: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once (only its hash is stored).
    #[command(
        after_help = "Example:\n  claudecluster admin token create --user alice --label laptop --data-dir ./data"
    )]
    Create {
        #[arg(long)]
        user: String,
        /// `user` (own sessions only) or `admin`.
        #[arg(long, default_value = "user", value_parser = ["user", "admin"])]
        role: String,
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain; names the first record that does not verify.
    Verify {
        #[command(flatten)]
        dir: DataDir,
    },
}

/// The store of an existing server: its PostgreSQL database, or the SQLite
/// file that must already be in the data directory.
async fn open(dir: &DataDir) -> anyhow::Result<AnyStore> {
    if dir.database_url.is_none() && !dir.data_dir.join(cc_store_sqlite::DB_FILE).exists() {
        bail!("no ClaudeCluster database in {}", dir.data_dir.display());
    }
    AnyStore::open(dir.database_url.as_deref(), &dir.data_dir).await
}

async fn record(store: &AnyStore, dir: &Path, action: &str, detail: String) -> anyhow::Result<()> {
    let rec = store
        .append_audit(AuditEvent {
            time: rfc3339(now()),
            actor: CLI_ACTOR.into(),
            source_ip: None,
            action: action.into(),
            session_id: None,
            outcome: "ok".into(),
            detail: Some(detail),
        })
        .await?;
    // With PostgreSQL nothing else may have made the data directory yet.
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(AUDIT_JSONL);
    let mut f = cc_server::auth::open_append(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&rec)?)?;
    Ok(())
}

/// Rewrites `audit.jsonl` from the (redacted) database, so the erased
/// user's name does not survive in the copy either.
async fn rewrite_jsonl(store: &AnyStore, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(AUDIT_JSONL);
    let tmp = dir.join(format!("{AUDIT_JSONL}.tmp"));
    let mut out = String::new();
    for rec in all_records(store).await? {
        out += &serde_json::to_string(&rec)?;
        out.push('\n');
    }
    let mut f = cc_server::auth::open_append(&tmp)?;
    f.set_len(0)?;
    f.write_all(out.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Every audit record, oldest first.
pub async fn all_records(store: &AnyStore) -> anyhow::Result<Vec<AuditRecord>> {
    Ok(store
        .audit_records(&AuditFilter {
            limit: 0,
            ..AuditFilter::default()
        })
        .await?)
}

pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Token(TokenCommand::Create {
            user,
            role,
            label,
            dir,
        }) => {
            check_user(&user).map_err(anyhow::Error::msg)?;
            // Creates the data directory when needed: tokens come first
            // on a server that will listen beyond loopback.
            let store = AnyStore::open(dir.database_url.as_deref(), &dir.data_dir).await?;
            let role = Role::parse(&role).context("role")?;
            let new = NewToken::generate(&user, role, label, now());
            store.insert_token(&new.record).await?;
            record(
                &store,
                &dir.data_dir,
                "admin.token.create",
                // No user name: it would outlive an erasure of that user.
                format!("token {} ({})", new.record.id, role.as_str()),
            )
            .await?;
            eprintln!(
                "token {} for {user} ({}); shown once:",
                new.record.id,
                role.as_str()
            );
            println!("{}", new.token);
        }
        AdminCommand::Token(TokenCommand::List { dir }) => {
            let store = open(&dir).await?;
            println!(
                "{:<14} {:<20} {:<6} {:<25} {:<25} LABEL",
                "ID", "USER", "ROLE", "CREATED", "REVOKED"
            );
            for t in store.list_tokens().await? {
                println!(
                    "{:<14} {:<20} {:<6} {:<25} {:<25} {}",
                    t.id,
                    t.user,
                    t.role.as_str(),
                    rfc3339(t.created_at),
                    t.revoked_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    t.label.unwrap_or_default()
                );
            }
        }
        AdminCommand::Token(TokenCommand::Revoke { id, dir }) => {
            let store = open(&dir).await?;
            if !store.revoke_token(&id, now()).await? {
                bail!("no live token {id}");
            }
            record(
                &store,
                &dir.data_dir,
                "admin.token.revoke",
                format!("token {id}"),
            )
            .await?;
            println!("revoked {id}");
        }
        AdminCommand::Audit(AuditCommand::Verify { dir }) => {
            let store = open(&dir).await?;
            let records = all_records(&store).await?;
            match audit::verify(&records) {
                Ok(n) => println!("audit chain verified: {n} records"),
                Err(e) => bail!("{e}"),
            }
        }
        AdminCommand::EraseUser { user, dir } => {
            check_user(&user).map_err(anyhow::Error::msg)?;
            let store = open(&dir).await?;
            let report = cc_core::identity::erase_user(&store, &user).await?;
            let redacted = store.redact_audit_actor(&user).await?;
            record(
                &store,
                &dir.data_dir,
                "admin.user.erase",
                format!(
                    "{} sessions, {} tokens deleted, {redacted} audit records redacted",
                    report.sessions, report.tokens
                ),
            )
            .await?;
            println!(
                "erased {user}: {} sessions and {} tokens deleted, {redacted} audit records redacted",
                report.sessions, report.tokens
            );
            rewrite_jsonl(&store, &dir.data_dir).await?;
        }
    }
    Ok(())
}

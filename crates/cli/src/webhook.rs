//! `claudecluster webhook`: register, list and delete webhook endpoints,
//! and read an endpoint's delivery log, through the API.

use crate::config::ConnArgs;
use crate::ui::{Exit, Style};
use cc_wire::api::{WebhookDelivery, WebhookInfo, WebhookRequest};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: WebhookCommand,
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Register an endpoint; prints its signing secret once.
    #[command(after_help = "Examples:
  claudecluster webhook add https://ci.example.com/hooks/claudecluster
  claudecluster webhook add https://chat.example.com/hook --event turn.finished --event session.error
Events: session.created, session.ready, turn.finished, session.error,
session.terminated, session.pushed, pull_request.opened (default: all).")]
    Add {
        /// Where deliveries go (`https://…`).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Only these events (repeatable; default: all).
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Every user's sessions, not only yours (administrators).
        #[arg(long)]
        all_sessions: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Your endpoints (an administrator's: all).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an endpoint and its delivery log.
    Rm { id: String },
    /// An endpoint's deliveries, newest first.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

pub async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let (_, client) = args.conn.client(None)?;
    let e = |err| Exit::from_client(err, client.base_url());
    match args.command {
        WebhookCommand::Add {
            endpoint,
            events,
            description,
            all_sessions,
            json,
        } => {
            let req = WebhookRequest {
                url: endpoint,
                events,
                description,
                all_sessions,
            };
            let created = client.create_webhook(&req).await.map_err(e)?;
            if json {
                print_json(&created);
            } else {
                println!("{}", created.info.id);
                eprintln!(
                    "{}",
                    Style::stderr().dim(&format!(
                        "signing secret (shown once; deliveries carry ClaudeCluster-Webhook-Signature): {}",
                        created.secret
                    ))
                );
            }
        }
        WebhookCommand::List { json } => {
            let hooks = client.webhooks().await.map_err(e)?;
            if json {
                print_json(&hooks);
            } else {
                print_webhooks(&hooks);
            }
        }
        WebhookCommand::Rm { id } => {
            client.delete_webhook(&id).await.map_err(e)?;
            eprintln!("{}", Style::stderr().dim(&format!("deleted {id}")));
        }
        WebhookCommand::Deliveries { id, limit, json } => {
            let log = client.webhook_deliveries(&id, limit).await.map_err(e)?;
            if json {
                print_json(&log);
            } else {
                print_deliveries(&log);
            }
        }
    }
    Ok(())
}

fn print_webhooks(hooks: &[WebhookInfo]) {
    if hooks.is_empty() {
        eprintln!("{}", Style::stderr().dim("no webhooks"));
        return;
    }
    let style = Style::stdout();
    println!(
        "{}",
        style.bold(&format!(
            "{:<28} {:<10} {:<24} {}",
            "ID", "OWNER", "EVENTS", "URL"
        ))
    );
    for h in hooks {
        let events = if h.events.is_empty() {
            "all".to_owned()
        } else {
            h.events.join(",")
        };
        let owner = if h.all_sessions {
            format!("{} (all)", h.owner)
        } else {
            h.owner.clone()
        };
        println!("{:<28} {:<10} {:<24} {}", h.id, owner, events, h.url);
    }
}

fn print_deliveries(log: &[WebhookDelivery]) {
    if log.is_empty() {
        eprintln!("{}", Style::stderr().dim("no deliveries"));
        return;
    }
    let style = Style::stdout();
    println!(
        "{}",
        style.bold(&format!(
            "{:<20} {:<20} {:<10} {:>8} {}",
            "CREATED", "EVENT", "STATE", "ATTEMPTS", "LAST"
        ))
    );
    for d in log {
        let created: String = d.created_at.chars().take(19).collect();
        let state = format!("{:<10}", d.state);
        let state = match d.state.as_str() {
            "failed" => style.red(&state),
            "delivered" => style.green(&state),
            _ => style.dim(&state),
        };
        let last = match (&d.last_status, &d.last_error) {
            (_, Some(err)) => err.clone(),
            (Some(s), None) => format!("HTTP {s}"),
            (None, None) => String::new(),
        };
        println!(
            "{created:<20} {:<20} {state} {:>8} {last}",
            d.event, d.attempts
        );
    }
}

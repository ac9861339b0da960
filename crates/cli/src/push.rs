//! Pushing a session's work and opening a pull request: the flags and the
//! report `session push` and `run --push/--pr` share.

use crate::ui::{Exit, Style};
use cc_client::Client;
use cc_wire::api::{PullRequestOptions, PushRequest, PushResponse};
use clap::Args;

#[derive(Args, Debug, Clone, Default)]
pub struct PushArgs {
    /// Branch to push to (default: claudecluster/<session-id>; others must
    /// be under it, claudecluster/<session-id>/..., or under a prefix the
    /// server allows).
    #[arg(long = "to", value_name = "BRANCH")]
    pub to: Option<String>,
    /// Message of the commit made of uncommitted work.
    #[arg(long = "commit-message", value_name = "TEXT")]
    pub commit_message: Option<String>,
    /// Pull request title (default: the first line of the last result).
    #[arg(long = "pr-title", value_name = "TEXT")]
    pub pr_title: Option<String>,
    /// Pull request body (default: the last result).
    #[arg(long = "pr-body", value_name = "TEXT")]
    pub pr_body: Option<String>,
    /// Branch the pull request targets (default: the session's base).
    #[arg(long = "pr-base", value_name = "BRANCH")]
    pub pr_base: Option<String>,
    /// Open the pull request as a draft.
    #[arg(long)]
    pub draft: bool,
}

impl PushArgs {
    pub fn request(&self, pull_request: bool) -> PushRequest {
        PushRequest {
            branch: self.to.clone(),
            message: self.commit_message.clone(),
            pull_request: pull_request.then(|| PullRequestOptions {
                title: self.pr_title.clone(),
                body: self.pr_body.clone(),
                base: self.pr_base.clone(),
                draft: self.draft,
            }),
        }
    }

    /// Whether any pull request flag was given (they need `--pr`).
    pub fn has_pr_flags(&self) -> bool {
        self.pr_title.is_some() || self.pr_body.is_some() || self.pr_base.is_some() || self.draft
    }
}

/// Pushes and returns what the server did.
pub async fn push(client: &Client, id: &str, req: &PushRequest) -> Result<PushResponse, Exit> {
    client
        .push(id, req)
        .await
        .map_err(|e| Exit::from_client(e, client.base_url()))
}

/// The human report of a push, one line each for the branch and the pull
/// request.
pub fn report_lines(r: &PushResponse, style: Style) -> Vec<String> {
    let short = cc_wire::api::short_commit(&r.commit);
    let mut notes = Vec::new();
    if r.created {
        notes.push("new branch");
    }
    if r.committed_changes {
        notes.push("uncommitted work committed first");
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    let mut lines = vec![format!(
        "{} pushed {} at {short}{notes}",
        style.green("✓"),
        style.bold(&r.branch)
    )];
    if let Some(pr) = &r.pull_request {
        lines.push(format!(
            "{} pull request #{} into {}: {}",
            style.green("✓"),
            pr.number,
            pr.base,
            pr.url
        ));
    }
    lines
}

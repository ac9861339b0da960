//! Each turn's outcome and cost, and the session's running totals.
//!
//! Spend is what the gateway measured: every `/v1/messages` answer it
//! relays is priced (see [`crate::pricing`]) and added with [`add_spend`],
//! which alone changes `totals.cost_usd` and `totals.tokens`. Budgets are
//! checked against that, so whatever runs in the container cannot change
//! what they see.
//!
//! Claude Code closes every turn with a `result` event, which the container
//! can forge: it only counts the turn (`turns`, `durationMs`, `numTurns`)
//! and gives the turn's `costUsd` and `usage` for display, each validated
//! (a cost that is not finite or is negative is 0, with a warning; token
//! counts clamped). Its `total_cost_usd` is cumulative over the life of one
//! Claude Code process, so the cost of a turn is taken from
//! `model_usage_since_last_result` (per model, since the previous
//! `result`) when present, and otherwise as the difference from the
//! previous `result` of the same process.

use crate::ids::SessionId;
use cc_wire::api::{ServerMessage, TokenUsage, TurnSummary, UsageTotals};
use serde_json::Value;

/// A session's usage as the core keeps (and stores) it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionUsage {
    /// `cost_usd` and `tokens` as the gateway measured them; the rest from
    /// Claude Code's `result` events.
    pub totals: UsageTotals,
    /// Claude Code's cumulative `total_cost_usd` at its last `result`.
    pub process_cost_usd: f64,
    /// Processes the kernel killed for exceeding the session's memory limit.
    pub oom_kills: u64,
}

/// One relayed model call as the gateway measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpend {
    pub tokens: TokenUsage,
    /// The tokens priced by the admin's price table, in USD.
    pub cost_usd: f64,
}

/// Adds a measured model call to the session's totals. A cost that is not
/// finite or is negative adds nothing (the gateway never makes one; this
/// keeps the totals sound whatever the caller passes); token counts are
/// clamped per call.
pub(crate) fn add_spend(id: &SessionId, usage: &mut SessionUsage, spend: &ModelSpend) {
    let t = &mut usage.totals;
    t.cost_usd += valid_cost(id, spend.cost_usd, "gateway");
    let tokens = crate::pricing::clamp_tokens(&spend.tokens);
    let sum = |a: u64, b: u64| a.saturating_add(b);
    t.tokens.input_tokens = sum(t.tokens.input_tokens, tokens.input_tokens);
    t.tokens.output_tokens = sum(t.tokens.output_tokens, tokens.output_tokens);
    t.tokens.cache_creation_input_tokens = sum(
        t.tokens.cache_creation_input_tokens,
        tokens.cache_creation_input_tokens,
    );
    t.tokens.cache_read_input_tokens = sum(
        t.tokens.cache_read_input_tokens,
        tokens.cache_read_input_tokens,
    );
}

/// `cost` if it is finite and not negative; else 0, with a warning naming
/// where it came from.
fn valid_cost(id: &SessionId, cost: f64, source: &str) -> f64 {
    if cost.is_finite() && cost >= 0.0 {
        cost
    } else {
        tracing::warn!(session = %id, source, cost, "ignoring an invalid cost");
        0.0
    }
}

/// Refuses a turn once the session spent its `--max-budget-usd`. Claude
/// Code enforces the budget within one process; this keeps it across a
/// restart of the process (which starts counting from zero).
pub(crate) fn check_budget(
    init: &cc_wire::sessiond::InitRequest,
    usage: &SessionUsage,
) -> Result<(), crate::error::CoreError> {
    check_session_budget(session_budget(init), usage)
}

/// The session's `--max-budget-usd`, if it has one.
pub(crate) fn session_budget(init: &cc_wire::sessiond::InitRequest) -> Option<f64> {
    let args = &init.claude.args;
    args.iter()
        .rposition(|a| a == "--max-budget-usd")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
}

/// Refuses once `usage` reached `budget` (USD).
pub(crate) fn check_session_budget(
    budget: Option<f64>,
    usage: &SessionUsage,
) -> Result<(), crate::error::CoreError> {
    match budget {
        Some(b) if usage.totals.cost_usd >= b => Err(crate::error::CoreError::forbidden(
            "budget_exhausted",
            format!(
                "maxBudgetUsd: the session has spent {:.4} USD of its {b} USD",
                usage.totals.cost_usd
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a turn once `owner`'s sessions have spent the administrator's
/// per-user budget.
pub(crate) async fn check_user_budget<S: crate::seams::Store>(
    store: &S,
    owner: &str,
    limit: f64,
) -> Result<(), crate::error::CoreError> {
    let spent = spent_by(store, owner).await?;
    if spent >= limit {
        return Err(crate::error::CoreError::forbidden(
            "budget_exhausted",
            format!(
                "your sessions have spent {spent:.4} USD of the {limit} USD the administrator \
                 allows per user"
            ),
        ));
    }
    Ok(())
}

/// What `owner`'s sessions have spent in all, as stored.
pub(crate) async fn spent_by<S: crate::seams::Store>(
    store: &S,
    owner: &str,
) -> Result<f64, crate::error::CoreError> {
    Ok(store
        .list_sessions(false)
        .await?
        .iter()
        .filter(|r| r.owner == owner)
        .map(|r| r.usage.totals.cost_usd)
        .sum())
}

/// Longest turn taken from a `result` (a year): beyond is not a real turn.
const MAX_TURN_MS: u64 = 365 * 24 * 3600 * 1000;
/// Most model calls taken from one `result`.
const MAX_CALLS_PER_TURN: u64 = 1_000_000;

/// For a `result` event: counts the turn, logs the turn and returns the
/// `turnResult` event to append after it. Other events: `None`.
pub(crate) fn on_claude_event(
    id: &SessionId,
    usage: &mut SessionUsage,
    event: &Value,
    timestamp: u64,
) -> Option<ServerMessage> {
    if event.get("type").and_then(Value::as_str) != Some("result") {
        return None;
    }
    let mut turn = summarize(usage, event);
    turn.cost_usd = valid_cost(id, turn.cost_usd, "claude code result");
    turn.usage = crate::pricing::clamp_tokens(&turn.usage);
    turn.duration_ms = turn.duration_ms.min(MAX_TURN_MS);
    turn.num_turns = turn.num_turns.min(MAX_CALLS_PER_TURN);
    // Counting only: spend and tokens are the gateway's (see `add_spend`).
    let t = &mut usage.totals;
    t.turns += 1;
    t.errored_turns += u64::from(turn.is_error);
    t.duration_ms = t.duration_ms.saturating_add(turn.duration_ms);
    t.num_turns = t.num_turns.saturating_add(turn.num_turns);
    tracing::info!(
        session = %id,
        subtype = %turn.subtype,
        is_error = turn.is_error,
        terminal_reason = turn.terminal_reason.as_deref().unwrap_or(""),
        api_error_status = turn.api_error_status,
        duration_ms = turn.duration_ms,
        reported_cost_usd = turn.cost_usd,
        model_calls = turn.num_turns,
        input_tokens = turn.usage.input_tokens,
        output_tokens = turn.usage.output_tokens,
        session_cost_usd = t.cost_usd,
        "turn ended"
    );
    Some(ServerMessage::TurnResult {
        seq: 0,
        timestamp,
        turn,
        totals: *t,
    })
}

fn summarize(usage: &mut SessionUsage, ev: &Value) -> TurnSummary {
    let u64_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let str_of = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_owned);
    let is_error = ev.get("is_error").and_then(Value::as_bool) == Some(true);
    let total = ev
        .get("total_cost_usd")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0);
    let since_last: Option<f64> = ev
        .get("model_usage_since_last_result")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .values()
                .filter_map(|m| m.get("costUSD").and_then(Value::as_f64))
                .filter(|c| c.is_finite() && *c >= 0.0)
                .sum()
        });
    let cost_usd = match (since_last, total) {
        (Some(c), _) => c,
        // A smaller total means a new process (it restarted with --resume).
        (None, Some(t)) if t >= usage.process_cost_usd => t - usage.process_cost_usd,
        (None, Some(t)) => t,
        (None, None) => 0.0,
    };
    if let Some(t) = total {
        usage.process_cost_usd = t;
    }
    let tokens = ev
        .get("usage")
        .map_or_else(TokenUsage::default, |u| TokenUsage {
            input_tokens: u64_of(u, "input_tokens"),
            output_tokens: u64_of(u, "output_tokens"),
            cache_creation_input_tokens: u64_of(u, "cache_creation_input_tokens"),
            cache_read_input_tokens: u64_of(u, "cache_read_input_tokens"),
        });
    let error = is_error
        .then(|| {
            ev.get("errors")
                .and_then(Value::as_array)
                .map(|errs| {
                    errs.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|s| !s.is_empty())
                .or_else(|| str_of("result"))
                .or_else(|| str_of("terminal_reason"))
        })
        .flatten();
    TurnSummary {
        subtype: str_of("subtype").unwrap_or_else(|| "unknown".into()),
        is_error,
        terminal_reason: str_of("terminal_reason"),
        error,
        api_error_status: ev
            .get("api_error_status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok()),
        duration_ms: u64_of(ev, "duration_ms"),
        cost_usd,
        num_turns: u64_of(ev, "num_turns"),
        usage: tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(msg: Option<ServerMessage>) -> (TurnSummary, UsageTotals) {
        match msg {
            Some(ServerMessage::TurnResult { turn, totals, .. }) => (turn, totals),
            other => panic!("expected a turn result, got {other:?}"),
        }
    }

    #[test]
    fn a_spent_budget_refuses_turns() {
        let mut init = cc_wire::sessiond::InitRequest {
            clone_url: "http://gw/git/x".into(),
            git_headers: Vec::new(),
            branch: None,
            claude: Default::default(),
            instructions: None,
            push_branch: None,
            fork: false,
            permission_timeout_secs: None,
        };
        let mut u = SessionUsage::default();
        u.totals.cost_usd = 0.05;
        assert!(check_budget(&init, &u).is_ok());
        init.claude.args = vec!["--max-budget-usd".into(), "0.01".into()];
        let e = check_budget(&init, &u).unwrap_err().to_string();
        assert!(e.contains("maxBudgetUsd"), "{e}");
        u.totals.cost_usd = 0.005;
        assert!(check_budget(&init, &u).is_ok());
    }

    #[test]
    fn turns_are_priced_and_summed() {
        let id = SessionId::generate();
        let mut u = SessionUsage::default();
        assert!(on_claude_event(&id, &mut u, &json!({"type":"assistant"}), 0).is_none());
        let first = json!({"type":"result","subtype":"success","is_error":false,
            "duration_ms":100,"total_cost_usd":0.5,"num_turns":2,
            "usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":1}});
        let (t1, tot) = turn(on_claude_event(&id, &mut u, &first, 0));
        assert_eq!(
            (t1.cost_usd, t1.num_turns, t1.usage.input_tokens),
            (0.5, 2, 10)
        );
        assert_eq!(tot.turns, 1);
        // Cumulative total: the second turn cost 0.25.
        let second = json!({"type":"result","subtype":"error_max_turns","is_error":true,
            "terminal_reason":"max_turns","errors":["Reached maximum number of turns (1)"],
            "duration_ms":50,"total_cost_usd":0.75,"num_turns":2,"usage":{"input_tokens":5,"output_tokens":1}});
        let (t2, tot) = turn(on_claude_event(&id, &mut u, &second, 0));
        assert_eq!(t2.cost_usd, 0.25);
        assert_eq!(
            t2.error.as_deref(),
            Some("Reached maximum number of turns (1)")
        );
        assert_eq!(t2.terminal_reason.as_deref(), Some("max_turns"));
        assert_eq!((tot.turns, tot.errored_turns), (2, 1));
        assert_eq!((tot.duration_ms, tot.num_turns), (150, 4));
        // The per-turn breakdown wins when present; API errors keep their status.
        let third = json!({"type":"result","subtype":"success","is_error":true,
            "result":"API Error: 529","api_error_status":529,"total_cost_usd":9.0,
            "model_usage_since_last_result":{"a":{"costUSD":0.125},"b":{"costUSD":0.125}}});
        let (t3, tot) = turn(on_claude_event(&id, &mut u, &third, 0));
        assert_eq!((t3.cost_usd, t3.api_error_status), (0.25, Some(529)));
        assert_eq!(t3.error.as_deref(), Some("API Error: 529"));
        // What Claude Code reports is shown, never spent.
        assert_eq!((tot.cost_usd, tot.tokens.input_tokens), (0.0, 0));
    }

    #[test]
    fn a_forged_result_changes_nothing_the_budget_sees() {
        let id = SessionId::generate();
        let mut init = cc_wire::sessiond::InitRequest {
            clone_url: "http://gw/git/x".into(),
            git_headers: Vec::new(),
            branch: None,
            claude: Default::default(),
            instructions: None,
            push_branch: None,
            fork: false,
            permission_timeout_secs: None,
        };
        init.claude.args = vec!["--max-budget-usd".into(), "0.5".into()];
        let mut u = SessionUsage::default();
        let measured = ModelSpend {
            tokens: TokenUsage {
                input_tokens: 1000,
                ..Default::default()
            },
            cost_usd: 0.75,
        };
        add_spend(&id, &mut u, &measured);
        assert!(check_budget(&init, &u).is_err());
        for forged in [
            json!({"type":"result","subtype":"success","total_cost_usd":-1000.0,
                "usage":{"input_tokens":-5,"output_tokens":u64::MAX}}),
            json!({"type":"result","subtype":"success","total_cost_usd":1e300,
                "model_usage_since_last_result":{"a":{"costUSD":-1e308},"b":{"costUSD":1e308}}}),
            json!({"type":"result","subtype":"success","model_usage_since_last_result":
                {"a":{"costUSD":1e308},"b":{"costUSD":1e308}}}),
        ] {
            let (t, tot) = turn(on_claude_event(&id, &mut u, &forged, 0));
            assert!(t.cost_usd.is_finite() && t.cost_usd >= 0.0, "{t:?}");
            assert!(t.usage.output_tokens <= crate::pricing::MAX_TOKENS_PER_CALL);
            assert_eq!((tot.cost_usd, tot.tokens), (0.75, measured.tokens));
            assert!(check_budget(&init, &u).is_err());
        }
        // An invalid measured cost adds nothing either.
        add_spend(
            &id,
            &mut u,
            &ModelSpend {
                cost_usd: f64::NAN,
                ..Default::default()
            },
        );
        add_spend(
            &id,
            &mut u,
            &ModelSpend {
                cost_usd: -1.0,
                ..Default::default()
            },
        );
        assert_eq!(u.totals.cost_usd, 0.75);
    }
}

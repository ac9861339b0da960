//! Each turn's outcome and cost, and the session's running totals.
//!
//! Claude Code closes every turn with a `result` event. Its `total_cost_usd`
//! is cumulative over the life of one Claude Code process, so the cost of a
//! turn is taken from `model_usage_since_last_result` (per model, since the
//! previous `result`) when present, and otherwise as the difference from the
//! previous `result` of the same process. Reported `costUsd` is always the
//! cost of that one turn; totals are sums of turns.

use crate::ids::SessionId;
use cc_wire::api::{ServerMessage, TokenUsage, TurnSummary, UsageTotals};
use serde_json::Value;

/// A session's usage as the core keeps (and stores) it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SessionUsage {
    pub totals: UsageTotals,
    /// Claude Code's cumulative `total_cost_usd` at its last `result`.
    pub process_cost_usd: f64,
    /// Processes the kernel killed for exceeding the session's memory limit.
    pub oom_kills: u64,
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

/// For a `result` event: updates the totals, logs the turn and returns the
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
    let turn = summarize(usage, event);
    let t = &mut usage.totals;
    t.turns += 1;
    t.errored_turns += u64::from(turn.is_error);
    t.cost_usd += turn.cost_usd;
    t.duration_ms += turn.duration_ms;
    t.num_turns += turn.num_turns;
    t.tokens.input_tokens += turn.usage.input_tokens;
    t.tokens.output_tokens += turn.usage.output_tokens;
    t.tokens.cache_creation_input_tokens += turn.usage.cache_creation_input_tokens;
    t.tokens.cache_read_input_tokens += turn.usage.cache_read_input_tokens;
    tracing::info!(
        session = %id,
        subtype = %turn.subtype,
        is_error = turn.is_error,
        terminal_reason = turn.terminal_reason.as_deref().unwrap_or(""),
        api_error_status = turn.api_error_status,
        duration_ms = turn.duration_ms,
        cost_usd = turn.cost_usd,
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
    let total = ev.get("total_cost_usd").and_then(Value::as_f64);
    let since_last: Option<f64> = ev
        .get("model_usage_since_last_result")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .values()
                .filter_map(|m| m.get("costUSD").and_then(Value::as_f64))
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
        assert_eq!((tot.turns, tot.errored_turns, tot.cost_usd), (2, 1, 0.75));
        assert_eq!(
            (tot.tokens.input_tokens, tot.duration_ms, tot.num_turns),
            (15, 150, 4)
        );
        // The per-turn breakdown wins when present; API errors keep their status.
        let third = json!({"type":"result","subtype":"success","is_error":true,
            "result":"API Error: 529","api_error_status":529,"total_cost_usd":9.0,
            "model_usage_since_last_result":{"a":{"costUSD":0.125},"b":{"costUSD":0.125}}});
        let (t3, tot) = turn(on_claude_event(&id, &mut u, &third, 0));
        assert_eq!((t3.cost_usd, t3.api_error_status), (0.25, Some(529)));
        assert_eq!(t3.error.as_deref(), Some("API Error: 529"));
        assert_eq!(tot.cost_usd, 1.0);
    }
}

//! Renders Claude Code's stream-json events as terminal text.
//!
//! Sessions run Claude Code with `--include-partial-messages`, so the
//! assistant's text arrives twice: as `stream_event` text deltas while it is
//! generated, and again inside the complete `assistant` message. The deltas
//! are rendered (that is what makes output live); the text blocks of the
//! complete message are skipped; tool calls are rendered from the complete
//! message because their input is only whole there.

use serde_json::Value;

/// Most lines of a tool result shown; the rest is folded.
const RESULT_PREVIEW_LINES: usize = 3;
/// Longest single rendered line of a tool result or tool input.
const PREVIEW_LINE_CHARS: usize = 160;

/// What to do with one Claude Code event.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// Text for a person; `keep_event` says whether the raw event carries
    /// information beyond the text (false for token deltas).
    Text { text: String, keep_event: bool },
    /// No text, but the raw event is worth keeping (init, results…).
    Silent,
    /// Nothing worth keeping (partial-message framing already covered by
    /// the complete message).
    Drop,
}

pub fn render(event: &Value) -> Rendered {
    match event.get("type").and_then(Value::as_str) {
        Some("stream_event") => render_stream_event(event),
        Some("assistant") => render_assistant(event),
        Some("user") => render_tool_results(event),
        Some("result") => render_result(event),
        Some("system") => match event.get("subtype").and_then(Value::as_str) {
            Some("api_retry") => text(
                format!(
                    "\n⟳ API request failed{}, retrying\n",
                    event
                        .get("error_status")
                        .and_then(Value::as_u64)
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ),
                true,
            ),
            _ => Rendered::Silent,
        },
        _ => Rendered::Silent,
    }
}

fn text(text: String, keep_event: bool) -> Rendered {
    Rendered::Text { text, keep_event }
}

fn render_stream_event(event: &Value) -> Rendered {
    let inner = &event["event"];
    if inner.get("type").and_then(Value::as_str) == Some("content_block_delta")
        && inner["delta"].get("type").and_then(Value::as_str) == Some("text_delta")
    {
        if let Some(t) = inner["delta"].get("text").and_then(Value::as_str) {
            if !t.is_empty() {
                return text(t.to_owned(), false);
            }
        }
    }
    Rendered::Drop
}

fn render_assistant(event: &Value) -> Rendered {
    let mut out = String::new();
    for block in content_blocks(&event["message"]) {
        if block.get("type").and_then(Value::as_str) == Some("tool_use") {
            let name = block.get("name").and_then(Value::as_str).unwrap_or("tool");
            let detail = tool_detail(name, &block["input"]);
            out.push_str(&format!("\n▶ {name}{}\n", prefixed(": ", &detail)));
        }
    }
    if out.is_empty() {
        Rendered::Silent
    } else {
        text(out, true)
    }
}

fn prefixed(prefix: &str, s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("{prefix}{s}")
    }
}

/// The one argument a person wants to see for a tool call.
fn tool_detail(name: &str, input: &Value) -> String {
    let field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_owned);
    let detail = match name {
        "Bash" => field("command"),
        "Edit" | "Write" | "Read" | "MultiEdit" | "NotebookEdit" => {
            field("file_path").or_else(|| field("notebook_path"))
        }
        "Glob" | "Grep" => field("pattern"),
        "WebFetch" => field("url"),
        "WebSearch" => field("query"),
        "Task" | "Agent" => field("description"),
        _ => None,
    };
    let detail = detail.unwrap_or_else(|| match input {
        Value::Object(m) if !m.is_empty() => Value::Object(m.clone()).to_string(),
        _ => String::new(),
    });
    truncate_line(detail.lines().next().unwrap_or(""), PREVIEW_LINE_CHARS)
}

fn render_tool_results(event: &Value) -> Rendered {
    let mut out = String::new();
    for block in content_blocks(&event["message"]) {
        if block.get("type").and_then(Value::as_str) != Some("tool_result") {
            continue;
        }
        let body = tool_result_text(&block["content"]);
        let is_error = block.get("is_error").and_then(Value::as_bool) == Some(true);
        out.push_str(&fold_result(&body, is_error));
    }
    if out.is_empty() {
        Rendered::Silent
    } else {
        text(out, true)
    }
}

fn tool_result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `  ⎿ first lines … (+N lines)` — the short form of a tool's result.
fn fold_result(body: &str, is_error: bool) -> String {
    let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
    let marker = if is_error { "  ⎿ error: " } else { "  ⎿ " };
    if lines.is_empty() {
        return format!("{marker}(no output)\n");
    }
    let mut out = String::new();
    for (i, line) in lines.iter().take(RESULT_PREVIEW_LINES).enumerate() {
        let lead = if i == 0 { marker } else { "    " };
        out.push_str(lead);
        out.push_str(&truncate_line(line, PREVIEW_LINE_CHARS));
        out.push('\n');
    }
    if lines.len() > RESULT_PREVIEW_LINES {
        out.push_str(&format!(
            "    … (+{} lines)\n",
            lines.len() - RESULT_PREVIEW_LINES
        ));
    }
    out
}

fn render_result(event: &Value) -> Rendered {
    let is_error = event.get("is_error").and_then(Value::as_bool) == Some(true);
    let secs = event
        .get("duration_ms")
        .and_then(Value::as_f64)
        .map(|ms| format!("{:.1}s", ms / 1000.0));
    // `total_cost_usd` adds up over the process's turns; this turn's share
    // is in `model_usage_since_last_result` when Claude Code sends it.
    let turn_cost = event
        .get("model_usage_since_last_result")
        .and_then(Value::as_object)
        .map(|m| {
            m.values()
                .filter_map(|u| u.get("costUSD").and_then(Value::as_f64))
                .sum::<f64>()
        });
    let cost = turn_cost
        .or_else(|| event.get("total_cost_usd").and_then(Value::as_f64))
        .map(|c| format!("${c:.4}"));
    let turns = event
        .get("num_turns")
        .and_then(Value::as_u64)
        .map(|n| format!("{n} turn{}", if n == 1 { "" } else { "s" }));
    let facts: Vec<String> = [secs, cost, turns].into_iter().flatten().collect();
    let aborted = event
        .get("terminal_reason")
        .and_then(Value::as_str)
        .is_some_and(|r| r.starts_with("aborted"));
    let mut out = if aborted {
        // An interrupt: Claude Code's `result` then holds an internal
        // diagnostic, not words for a person.
        "\n✗ interrupted".to_owned()
    } else if is_error {
        // `error_max_turns` and `error_max_budget_usd` carry no `result`,
        // only `errors` ("Reached maximum number of turns (1)").
        let why = event
            .get("result")
            .and_then(Value::as_str)
            .or_else(|| {
                event
                    .get("errors")
                    .and_then(Value::as_array)
                    .and_then(|e| e.first())
                    .and_then(Value::as_str)
            })
            .or_else(|| event.get("terminal_reason").and_then(Value::as_str))
            .unwrap_or("turn failed");
        format!("\n✗ {}", truncate_line(why, PREVIEW_LINE_CHARS))
    } else {
        "\n✓ done".to_owned()
    };
    if !facts.is_empty() {
        out.push_str(&format!(" ({})", facts.join(" · ")));
    }
    out.push('\n');
    text(out, true)
}

fn content_blocks(message: &Value) -> impl Iterator<Item = &Value> {
    message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn truncate_line(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_deltas_stream_and_full_text_is_not_repeated() {
        let delta = json!({"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}});
        assert_eq!(render(&delta), text("Hel".into(), false));
        let full =
            json!({"type":"assistant","message":{"content":[{"type":"text","text":"Hello"}]}});
        assert_eq!(render(&full), Rendered::Silent);
        let start = json!({"type":"stream_event","event":{"type":"message_start"}});
        assert_eq!(render(&start), Rendered::Drop);
    }

    #[test]
    fn tool_calls_show_tool_and_command() {
        let ev = json!({"type":"assistant","message":{"content":[
            {"type":"tool_use","name":"Bash","input":{"command":"git commit -m x\nsecond"}},
            {"type":"tool_use","name":"Edit","input":{"file_path":"/w/a.rs","old_string":"a"}}]}});
        let Rendered::Text { text, .. } = render(&ev) else {
            panic!()
        };
        assert_eq!(text, "\n▶ Bash: git commit -m x\n\n▶ Edit: /w/a.rs\n");
    }

    #[test]
    fn tool_results_are_folded() {
        let ev = json!({"type":"user","message":{"content":[{"type":"tool_result","content":"1\n2\n3\n4\n5"}]}});
        let Rendered::Text { text, .. } = render(&ev) else {
            panic!()
        };
        assert_eq!(text, "  ⎿ 1\n    2\n    3\n    … (+2 lines)\n");
        let err = json!({"type":"user","message":{"content":[{"type":"tool_result","is_error":true,"content":[{"type":"text","text":"denied"}]}]}});
        let Rendered::Text { text, .. } = render(&err) else {
            panic!()
        };
        assert_eq!(text, "  ⎿ error: denied\n");
    }

    #[test]
    fn interrupted_turns_say_so() {
        let ev = json!({"type":"result","is_error":true,"subtype":"error_during_execution",
            "result":"[ede_diagnostic] result_type=user","terminal_reason":"aborted_streaming","duration_ms":900});
        assert_eq!(render(&ev), text("\n✗ interrupted (0.9s)\n".into(), true));
    }

    #[test]
    fn results_summarise_the_turn() {
        let ok = json!({"type":"result","is_error":false,"duration_ms":3200,"total_cost_usd":0.0123,"num_turns":2});
        assert_eq!(
            render(&ok),
            text("\n✓ done (3.2s · $0.0123 · 2 turns)\n".into(), true)
        );
        let bad = json!({"type":"result","is_error":true,"result":"API Error: 401"});
        assert_eq!(render(&bad), text("\n✗ API Error: 401\n".into(), true));
    }
}

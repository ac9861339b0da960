//! Read-only view of an incoming Messages API request body.
//!
//! This module owns the tolerant parsing of whatever Claude Code sends: it
//! never fails, it only extracts what the script needs (model, system prompt,
//! tools, the typed prompts of the conversation and a pending tool result).
//! Unknown or malformed shapes simply yield empty values.

use serde_json::Value;

/// Marker Claude Code puts in front of injected context blocks.
const REMINDER_OPEN: &str = "<system-reminder>";
const REMINDER_CLOSE: &str = "</system-reminder>";
/// Wrapper Claude Code puts around a user message that arrives mid-turn
/// (it is appended to the next tool-result message instead of opening a turn).
const MID_TURN_OPEN: &str = "The user sent a new message while you were working:\n";
const MID_TURN_CLOSE: &str =
    "\n\nThis is how Claude Code surfaces messages the user sends mid-turn";

/// What the double understood from one request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestView {
    /// The `model` field (empty when absent).
    pub model: String,
    /// The `system` field flattened to one string (text blocks joined by `\n`).
    pub system: String,
    /// Whether the client asked for a server-sent-event stream.
    pub stream: bool,
    /// The `max_tokens` field, when present.
    pub max_tokens: Option<u64>,
    /// Names of the tools offered in `tools`.
    pub tool_names: Vec<String>,
    /// Typed prompts of every user turn, oldest first.
    pub typed_prompts: Vec<String>,
    /// Text of the first `tool_result` block when the last user message is a
    /// pure tool follow-up (it carries a tool result and no typed text).
    pub tool_result: Option<String>,
    /// Whether that `tool_result` block is marked `is_error`.
    pub tool_result_is_error: bool,
}

impl RequestView {
    /// Builds the view from a parsed request body; never fails.
    pub fn from_json(body: &Value) -> Self {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let system = body.get("system").map(flatten_text).unwrap_or_default();
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
        let tool_names = body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();

        let user_contents: Vec<&Value> = body
            .get("messages")
            .and_then(Value::as_array)
            .map(|messages| {
                messages
                    .iter()
                    .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .filter_map(|m| m.get("content"))
                    .collect()
            })
            .unwrap_or_default();

        let typed_prompts = user_contents
            .iter()
            .filter_map(|content| typed_text(content))
            .collect();
        let follow_up = user_contents
            .last()
            .filter(|content| typed_text(content).is_none());
        let tool_result = follow_up.and_then(|content| first_tool_result(content));
        let tool_result_is_error = follow_up
            .and_then(|content| content.as_array())
            .and_then(|blocks| {
                blocks
                    .iter()
                    .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            })
            .and_then(|b| b.get("is_error"))
            .and_then(Value::as_bool)
            .unwrap_or(false);

        Self {
            model,
            system,
            stream,
            max_tokens,
            tool_names,
            typed_prompts,
            tool_result,
            tool_result_is_error,
        }
    }

    /// The typed prompt of the conversation's last typed user turn (empty if none).
    pub fn typed_prompt(&self) -> &str {
        self.typed_prompts.last().map(String::as_str).unwrap_or("")
    }

    /// Typed prompts of all user turns before the current one.
    pub fn earlier_prompts(&self) -> &[String] {
        let n = self.typed_prompts.len().saturating_sub(1);
        &self.typed_prompts[..n]
    }

    /// Whether the request offers a tool with this name.
    pub fn has_tool(&self, name: &str) -> bool {
        self.tool_names.iter().any(|t| t == name)
    }
}

/// The text the user typed in one user message: the last text block that is
/// not (only) an injected `<system-reminder>`, unwrapped from Claude Code's
/// mid-turn wrapper when present.
fn typed_text(content: &Value) -> Option<String> {
    let typed = match content {
        Value::String(s) => without_reminders(s),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter_map(without_reminders)
            .next_back(),
        _ => None,
    };
    typed.map(|text| match text.strip_prefix(MID_TURN_OPEN) {
        Some(inner) => inner
            .find(MID_TURN_CLOSE)
            .map_or(inner, |end| &inner[..end])
            .to_owned(),
        None => text,
    })
}

/// Returns the text with leading reminder sections removed, or `None` when
/// nothing typed remains. Text not starting with a reminder is kept verbatim.
fn without_reminders(text: &str) -> Option<String> {
    if !text.trim_start().starts_with(REMINDER_OPEN) {
        return (!text.trim().is_empty()).then(|| text.to_owned());
    }
    let mut rest = text.trim_start();
    while let Some(after_open) = rest.strip_prefix(REMINDER_OPEN) {
        let close = after_open.find(REMINDER_CLOSE)?;
        rest = after_open[close + REMINDER_CLOSE.len()..].trim_start();
    }
    (!rest.trim().is_empty()).then(|| rest.to_owned())
}

/// Text content of the first `tool_result` block in a user message.
fn first_tool_result(content: &Value) -> Option<String> {
    content
        .as_array()?
        .iter()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| b.get("content").map(flatten_text).unwrap_or_default())
}

/// Flattens a string or a list of text blocks into one string.
pub fn flatten_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.as_str()),
                _ => b.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reminder(s: &str) -> Value {
        json!({"type": "text", "text": format!("<system-reminder>\n{s}\n</system-reminder>")})
    }

    #[test]
    fn typed_prompt_skips_system_reminders() {
        let body = json!({
            "model": "claude-x",
            "system": [{"type": "text", "text": "You are"}, {"type": "text", "text": "helpful"}],
            "stream": true,
            "max_tokens": 32000,
            "tools": [{"name": "Bash"}, {"name": "Write"}],
            "messages": [
                {"role": "system", "content": "ignored"},
                {"role": "user", "content": [reminder("ctx"), reminder("more"), {"type": "text", "text": "say: hi"}]},
            ]
        });
        let view = RequestView::from_json(&body);
        assert_eq!(view.model, "claude-x");
        assert_eq!(view.system, "You are\nhelpful");
        assert!(view.stream);
        assert_eq!(view.max_tokens, Some(32000));
        assert_eq!(view.tool_names, ["Bash", "Write"]);
        assert_eq!(view.typed_prompt(), "say: hi");
        assert!(view.earlier_prompts().is_empty());
        assert_eq!(view.tool_result, None);
    }

    #[test]
    fn string_content_and_inline_reminders() {
        let body = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "<system-reminder>x</system-reminder>\nsecond"},
            {"role": "user", "content": [reminder("only a reminder")]},
        ]});
        let view = RequestView::from_json(&body);
        assert_eq!(view.typed_prompts, ["first", "second"]);
        assert_eq!(view.earlier_prompts(), ["first"]);
    }

    #[test]
    fn tool_follow_up_is_detected() {
        let body = json!({"messages": [
            {"role": "user", "content": [reminder("ctx"), {"type": "text", "text": "bash: ls"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                reminder("after"),
            ]},
        ]});
        let view = RequestView::from_json(&body);
        assert_eq!(view.typed_prompt(), "bash: ls");
        assert_eq!(view.tool_result.as_deref(), Some("a\nb"));
    }

    #[test]
    fn mid_turn_message_opens_a_new_turn() {
        let body = json!({"messages": [
            {"role": "user", "content": [reminder("ctx"), {"type": "text", "text": "bash: ls"}]},
            {"role": "system", "content": "# Environment"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": "out"},
                {"type": "text", "text": "The user sent a new message while you were working:\nrecall\nplease\n\nThis is how Claude Code surfaces messages the user sends mid-turn \u{2014} blah."},
            ]},
        ]});
        let view = RequestView::from_json(&body);
        assert_eq!(view.typed_prompts, ["bash: ls", "recall\nplease"]);
        assert_eq!(view.tool_result, None);
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            json!(null),
            json!(5),
            json!({"messages": "x"}),
            json!({"messages": [1, {"role": 2}]}),
        ] {
            let view = RequestView::from_json(&body);
            assert_eq!(view.typed_prompt(), "");
        }
    }
}

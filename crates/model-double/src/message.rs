//! Assistant messages as the Messages API returns them.
//!
//! This module owns turning a scripted [`Reply`](crate::script::Reply)'s blocks
//! into a concrete message (ids, stop reason, usage estimate) and its
//! non-streaming JSON form.

use serde_json::{json, Value};

use crate::script::Block;

/// A token estimate from a character count: a quarter of it, at least 1.
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars / 4).unwrap_or(u64::MAX).max(1)
}

/// A fully determined assistant message.
#[derive(Clone, Debug, PartialEq)]
pub struct AssistantMessage {
    /// `msg_double_<n>`.
    pub id: String,
    /// Echo of the request's model.
    pub model: String,
    /// Content blocks in API form (`text` / `tool_use`).
    pub content: Vec<Value>,
    /// `end_turn` or `tool_use`.
    pub stop_reason: &'static str,
    /// Estimated from the request body length.
    pub input_tokens: u64,
    /// Estimated from the output length.
    pub output_tokens: u64,
}

impl AssistantMessage {
    /// Builds the message; `next_id` supplies fresh numbers for message and tool ids.
    pub fn build(
        blocks: &[Block],
        model: &str,
        input_tokens: u64,
        next_id: &mut impl FnMut() -> u64,
    ) -> Self {
        let id = format!("msg_double_{}", next_id());
        let mut output_chars = 0;
        let mut stop_reason = "end_turn";
        let content = blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => {
                    output_chars += text.chars().count();
                    json!({"type": "text", "text": text})
                }
                Block::ToolUse { name, input } => {
                    stop_reason = "tool_use";
                    output_chars += name.len() + input.to_string().len();
                    json!({
                        "type": "tool_use",
                        "id": format!("toolu_double_{}", next_id()),
                        "name": name,
                        "input": input,
                    })
                }
            })
            .collect();
        Self {
            id,
            model: model.to_owned(),
            content,
            stop_reason,
            input_tokens,
            output_tokens: estimate_tokens(output_chars),
        }
    }

    /// The complete message object (non-streaming response body).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": self.output_tokens,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stop_reason_and_usage() {
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let blocks = [
            Block::Text("12345678".into()),
            Block::ToolUse {
                name: "Bash".into(),
                input: json!({}),
            },
        ];
        let msg = AssistantMessage::build(&blocks, "m", 7, &mut next);
        assert_eq!(msg.id, "msg_double_1");
        assert_eq!(msg.content[1]["id"], "toolu_double_2");
        assert_eq!(msg.stop_reason, "tool_use");
        assert_eq!(msg.output_tokens, 3);
        let json = msg.to_json();
        assert_eq!(json["usage"]["input_tokens"], 7);
        assert_eq!(json["stop_sequence"], Value::Null);
        assert_eq!(estimate_tokens(0), 1);
    }
}

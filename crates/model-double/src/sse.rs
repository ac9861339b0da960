//! Server-sent-event encoding of the Messages API stream.
//!
//! This module owns the event sequence (`message_start`, `ping`, per block
//! `content_block_start` / `content_block_delta` / `content_block_stop`,
//! `message_delta`, `message_stop`) and how text and tool input are chunked.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::message::AssistantMessage;

/// Words per `text_delta` chunk.
const WORDS_PER_CHUNK: usize = 3;
/// Characters per `input_json_delta` chunk.
const JSON_CHUNK_CHARS: usize = 24;

/// One SSE frame: `event: <type>\ndata: <json>\n\n`.
pub fn frame(data: &Value) -> Bytes {
    let event = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `message_start` followed by a `ping`.
pub fn head(msg: &AssistantMessage) -> Vec<Bytes> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": msg.id,
            "type": "message",
            "role": "assistant",
            "model": msg.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": msg.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    });
    vec![frame(&start), frame(&json!({"type": "ping"}))]
}

/// `message_delta` followed by `message_stop`.
pub fn tail(msg: &AssistantMessage) -> Vec<Bytes> {
    let delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": msg.stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": msg.output_tokens},
    });
    vec![frame(&delta), frame(&json!({"type": "message_stop"}))]
}

/// `content_block_start` for a block, with its content emptied.
pub fn block_start(index: usize, block: &Value) -> Bytes {
    let mut empty = block.clone();
    match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => empty["input"] = json!({}),
        _ => empty["text"] = json!(""),
    }
    frame(&json!({"type": "content_block_start", "index": index, "content_block": empty}))
}

/// A `text_delta` for a block.
pub fn text_delta(index: usize, text: &str) -> Bytes {
    frame(&json!({
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }))
}

/// `content_block_stop` for a block.
pub fn block_stop(index: usize) -> Bytes {
    frame(&json!({"type": "content_block_stop", "index": index}))
}

/// Every frame of a message, in order.
pub fn message_frames(msg: &AssistantMessage) -> Vec<Bytes> {
    let mut frames = head(msg);
    for (index, block) in msg.content.iter().enumerate() {
        frames.push(block_start(index, block));
        if let Some(input) = block.get("input") {
            let json = input.to_string();
            for chunk in char_chunks(&json, JSON_CHUNK_CHARS) {
                frames.push(frame(&json!({
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": chunk},
                })));
            }
        } else {
            let text = block.get("text").and_then(Value::as_str).unwrap_or("");
            let words = words(text);
            for chunk in words.chunks(WORDS_PER_CHUNK) {
                frames.push(text_delta(index, &chunk.concat()));
            }
        }
        frames.push(block_stop(index));
    }
    frames.extend(tail(msg));
    frames
}

/// Splits text into words that keep their trailing whitespace, so that the
/// pieces concatenate back to the original text.
pub fn words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            pieces.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits a string into chunks of at most `size` characters.
fn char_chunks(s: &str, size: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for (count, (i, _)) in s.char_indices().enumerate() {
        if count > 0 && count % size == 0 {
            chunks.push(&s[start..i]);
            start = i;
        }
    }
    if start < s.len() {
        chunks.push(&s[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Block;

    #[test]
    fn words_round_trip() {
        let text = "  Ran `ls`.\nfile one\n\nüber  x ";
        assert_eq!(words(text).concat(), text);
        assert_eq!(words("a b"), ["a ", "b"]);
        assert!(words("").is_empty());
        assert_eq!(char_chunks("äbcde", 2).concat(), "äbcde");
    }

    #[test]
    fn frames_follow_the_protocol() {
        let mut n = 0;
        let blocks = [
            Block::Text("one two three four five".into()),
            Block::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo a fairly long command line here"}),
            },
        ];
        let msg = AssistantMessage::build(&blocks, "m", 10, &mut || {
            n += 1;
            n
        });
        let frames: Vec<String> = message_frames(&msg)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let events: Vec<&str> = frames
            .iter()
            .filter_map(|f| f.lines().next()?.strip_prefix("event: "))
            .collect();
        assert_eq!(
            events[..3],
            ["message_start", "ping", "content_block_start"]
        );
        assert_eq!(
            events[events.len() - 2..],
            ["message_delta", "message_stop"]
        );
        assert!(frames.iter().all(|f| f.ends_with("\n\n")));
        let data = |f: &String| -> Value {
            serde_json::from_str(f.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap()
        };
        let parsed: Vec<Value> = frames.iter().map(data).collect();
        let text: String = parsed
            .iter()
            .filter_map(|d| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "one two three four five");
        let json: String = parsed
            .iter()
            .filter_map(|d| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            blocks_input(&blocks)
        );
        assert!(
            parsed
                .iter()
                .filter(|d| d["delta"]["partial_json"].is_string())
                .count()
                > 1
        );
    }

    fn blocks_input(blocks: &[Block]) -> Value {
        match &blocks[1] {
            Block::ToolUse { input, .. } => input.clone(),
            Block::Text(_) => Value::Null,
        }
    }
}

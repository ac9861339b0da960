//! The script: decides deterministically what the double answers.
//!
//! The decision depends only on the typed prompt of the conversation's last
//! typed user turn (its first line selects a directive) and on whether the
//! request is the follow-up that carries the result of a tool call.

use std::time::Duration;

use serde_json::{json, Value};

use crate::request::RequestView;

/// How many characters of a tool result the `bash:` follow-up echoes.
const ECHOED_RESULT_CHARS: usize = 500;

/// A directive parsed from the first line of a typed prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive<'a> {
    /// `bash: <command>`: call the Bash tool.
    Bash(&'a str),
    /// `write: <path>` plus following lines: call the Write tool.
    Write { path: &'a str, content: String },
    /// `say: <text>`: reply with exactly `<text>`.
    Say(&'a str),
    /// `recall`: quote the earlier typed prompts.
    Recall,
    /// `slow: <ms> <text>`: stream the text word by word over `ms`.
    Slow { ms: u64, text: &'a str },
    /// `error: <status>`: answer with an HTTP error.
    Error(u16),
    /// A directive prefix with an argument that could not be understood.
    Invalid(&'a str),
    /// Anything else.
    Other,
}

impl<'a> Directive<'a> {
    /// Parses the directive from a typed prompt.
    pub fn parse(prompt: &'a str) -> Self {
        let (first, rest) = prompt.split_once('\n').unwrap_or((prompt, ""));
        let first = first.trim_end_matches('\r');
        if let Some(command) = first.strip_prefix("bash: ") {
            Directive::Bash(command.trim())
        } else if let Some(path) = first.strip_prefix("write: ") {
            let content = if rest.is_empty() {
                String::new()
            } else {
                format!("{}\n", rest.lines().collect::<Vec<_>>().join("\n"))
            };
            Directive::Write {
                path: path.trim(),
                content,
            }
        } else if let Some(text) = prompt.strip_prefix("say: ") {
            Directive::Say(text)
        } else if first.starts_with("recall") {
            Directive::Recall
        } else if let Some(args) = prompt.strip_prefix("slow: ") {
            let (ms, text) = args.split_once(' ').unwrap_or((args, ""));
            match ms.trim().parse() {
                Ok(ms) => Directive::Slow { ms, text },
                Err(_) => Directive::Invalid("slow: expects `slow: <ms> <text>`"),
            }
        } else if let Some(status) = first.strip_prefix("error: ") {
            match status.trim().parse() {
                Ok(code @ 400..=599) => Directive::Error(code),
                _ => Directive::Invalid("error: expects a status between 400 and 599"),
            }
        } else {
            Directive::Other
        }
    }
}

/// One content block of a scripted answer (ids are assigned when rendering).
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A text block.
    Text(String),
    /// A tool call.
    ToolUse { name: String, input: Value },
}

/// What the double answers to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A complete assistant message.
    Message { blocks: Vec<Block> },
    /// A text streamed word by word over `duration`.
    Slow { text: String, duration: Duration },
    /// An HTTP error with Anthropic's error body.
    Error { status: u16 },
}

impl Reply {
    fn text(text: impl Into<String>) -> Self {
        Reply::Message {
            blocks: vec![Block::Text(text.into())],
        }
    }

    fn tool(view: &RequestView, name: &str, input: Value) -> Self {
        if !view.has_tool(name) {
            return Reply::text(format!(
                "Model double here. I would use the {name} tool, but this request offers no tool named {name}."
            ));
        }
        Reply::Message {
            blocks: vec![Block::ToolUse {
                name: name.to_owned(),
                input,
            }],
        }
    }
}

/// Decides the reply for a request.
pub fn decide(view: &RequestView) -> Reply {
    let prompt = view.typed_prompt();
    let directive = Directive::parse(prompt);
    if let Some(result) = &view.tool_result {
        return follow_up(&directive, result);
    }
    match directive {
        Directive::Bash(command) => Reply::tool(
            view,
            "Bash",
            json!({"command": command, "description": "Run the requested command"}),
        ),
        Directive::Write { path, content } => Reply::tool(
            view,
            "Write",
            json!({"file_path": path, "content": content}),
        ),
        Directive::Say(text) => Reply::text(text),
        Directive::Recall => Reply::text(recall(view.earlier_prompts())),
        Directive::Slow { ms, text } => Reply::Slow {
            text: text.to_owned(),
            duration: Duration::from_millis(ms),
        },
        Directive::Error(status) => Reply::Error { status },
        Directive::Invalid(why) => Reply::text(format!("Model double here. Bad directive: {why}.")),
        Directive::Other => Reply::text(format!("Model double here. You asked: {prompt}")),
    }
}

/// The text answer after a tool ran.
fn follow_up(directive: &Directive<'_>, result: &str) -> Reply {
    match directive {
        Directive::Bash(command) => {
            let echoed: String = result.chars().take(ECHOED_RESULT_CHARS).collect();
            Reply::text(format!("Ran `{command}`.\n{echoed}"))
        }
        Directive::Write { path, .. } => Reply::text(format!("Wrote {path}.")),
        _ => Reply::text("Model double here. The tool finished."),
    }
}

/// The `recall` answer: earlier prompts quoted and comma separated.
fn recall(earlier: &[String]) -> String {
    if earlier.is_empty() {
        return "You said before: nothing".to_owned();
    }
    let quoted: Vec<String> = earlier.iter().map(|p| format!("\"{p}\"")).collect();
    format!("You said before: {}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(prompts: &[&str], tool_result: Option<&str>) -> RequestView {
        RequestView {
            tool_names: vec!["Bash".into(), "Write".into()],
            typed_prompts: prompts.iter().map(|p| p.to_string()).collect(),
            tool_result: tool_result.map(str::to_owned),
            ..RequestView::default()
        }
    }

    fn text_of(reply: Reply) -> String {
        match reply {
            Reply::Message { blocks } => match blocks.as_slice() {
                [Block::Text(t)] => t.clone(),
                other => panic!("not a single text block: {other:?}"),
            },
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn bash_then_follow_up() {
        let reply = decide(&view(&["bash: echo hi"], None));
        assert_eq!(
            reply,
            Reply::Message {
                blocks: vec![Block::ToolUse {
                    name: "Bash".into(),
                    input: json!({"command": "echo hi", "description": "Run the requested command"}),
                }]
            }
        );
        let long = "x".repeat(600);
        let text = text_of(decide(&view(&["bash: echo hi"], Some(&long))));
        assert_eq!(text, format!("Ran `echo hi`.\n{}", "x".repeat(500)));
    }

    #[test]
    fn bash_without_tool_answers_text() {
        let mut v = view(&["bash: ls"], None);
        v.tool_names.clear();
        assert!(text_of(decide(&v)).contains("no tool named Bash"));
    }

    #[test]
    fn write_collects_following_lines() {
        let reply = decide(&view(&["write: a/b.txt\nline 1\nline 2"], None));
        let Reply::Message { blocks } = reply else {
            panic!("expected message")
        };
        assert_eq!(
            blocks,
            [Block::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": "a/b.txt", "content": "line 1\nline 2\n"}),
            }]
        );
        let text = text_of(decide(&view(&["write: a/b.txt\nx"], Some(""))));
        assert_eq!(text, "Wrote a/b.txt.");
    }

    #[test]
    fn say_keeps_following_lines() {
        assert_eq!(text_of(decide(&view(&["say: a\nb"], None))), "a\nb");
    }

    #[test]
    fn recall_quotes_earlier_prompts() {
        assert_eq!(
            text_of(decide(&view(&["recall"], None))),
            "You said before: nothing"
        );
        assert_eq!(
            text_of(decide(&view(&["bash: ls", "say: x", "recall"], None))),
            "You said before: \"bash: ls\", \"say: x\""
        );
    }

    #[test]
    fn slow_error_and_default() {
        assert_eq!(
            decide(&view(&["slow: 300 a b c"], None)),
            Reply::Slow {
                text: "a b c".into(),
                duration: Duration::from_millis(300)
            }
        );
        assert_eq!(
            decide(&view(&["error: 529"], None)),
            Reply::Error { status: 529 }
        );
        assert!(text_of(decide(&view(&["error: 200"], None))).contains("Bad directive"));
        assert_eq!(
            text_of(decide(&view(&["hello"], None))),
            "Model double here. You asked: hello"
        );
        assert_eq!(
            text_of(decide(&view(&[], None))),
            "Model double here. You asked: "
        );
    }
}

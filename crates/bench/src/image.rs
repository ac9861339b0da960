//! The worker image's size and what takes the space, from `docker image
//! inspect` and `docker history`.

use crate::system::docker;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub image: String,
    pub size_bytes: u64,
    /// The biggest layers first (empty metadata layers left out).
    pub layers: Vec<Layer>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub size_bytes: u64,
    /// The instruction that made the layer, shortened.
    pub created_by: String,
}

pub async fn measure(image: &str) -> Result<ImageReport, String> {
    let size = docker(&["image", "inspect", "-f", "{{.Size}}", image]).await?;
    let history = docker(&[
        "history",
        "--no-trunc",
        "--human=false",
        "--format",
        "{{.Size}}\t{{.CreatedBy}}",
        image,
    ])
    .await?;
    Ok(ImageReport {
        image: image.to_owned(),
        size_bytes: size.trim().parse().map_err(|_| format!("size {size:?}"))?,
        layers: parse_history(&history),
    })
}

fn parse_history(text: &str) -> Vec<Layer> {
    let mut layers: Vec<Layer> = text
        .lines()
        .filter_map(|l| {
            // The base layer has no instruction (and the trailing tab of
            // the last line is trimmed away).
            let (size, by) = l.split_once('\t').unwrap_or((l, ""));
            let size_bytes: u64 = size.trim().parse().ok()?;
            (size_bytes > 0).then(|| Layer {
                size_bytes,
                created_by: shorten(by),
            })
        })
        .collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.size_bytes));
    layers
}

fn shorten(created_by: &str) -> String {
    if created_by.trim().is_empty() {
        return "base: imported root filesystem (debootstrap)".into();
    }
    // `COPY file:<hash> in <dest>`: the destination says what it is.
    if let Some((_, dest)) = created_by
        .split_once("COPY file:")
        .and_then(|(_, rest)| rest.split_once(" in "))
    {
        return format!("COPY {}", dest.trim());
    }
    let s = created_by
        .trim()
        .trim_start_matches("/bin/sh -c ")
        .trim_start_matches("#(nop) ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() > 90 {
        format!("{}…", s.chars().take(89).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_become_layers_biggest_first() {
        let text = "0\t/bin/sh -c #(nop)  ENTRYPOINT [\"x\"]\n1200\t/bin/sh -c #(nop) COPY file:abc in /usr/local/bin/sessiond\n410000000\t/bin/sh -c #(nop) COPY file:def in /usr/local/bin/claude\nbad line\n";
        let layers = parse_history(text);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].size_bytes, 410_000_000);
        assert_eq!(layers[0].created_by, "COPY /usr/local/bin/claude");
        assert_eq!(
            parse_history("12\tRUN x\n167000000")[0].created_by,
            "base: imported root filesystem (debootstrap)"
        );
    }
}

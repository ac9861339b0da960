//! What model calls cost: a price per million tokens for each model, by
//! input, output, cache write and cache read.
//!
//! The gateway prices every `/v1/messages` answer it relays with this
//! table (see `cc_server::gateway`), so a session's spend, and the budgets
//! checked against it, never rest on what the container reports.
//!
//! Invariants:
//! - A model is matched by the longest entry that prefixes its name, so a
//!   dated name (`claude-sonnet-4-5-20250929`) takes its family's price.
//! - A model no entry matches is priced at [`PriceTable::fallback`], which by
//!   default is the most expensive model's price: an unknown name never
//!   makes a budget last longer.
//! - Token counts are clamped to [`MAX_TOKENS_PER_CALL`] each, so the cost
//!   of one call is finite and bounded whatever an answer says.

use cc_wire::api::TokenUsage;

/// Largest token count taken from one answer, per kind. Far above any
/// model's context window (1M) and output limit; a larger count is a
/// corrupt or hostile answer.
pub const MAX_TOKENS_PER_CALL: u64 = 100_000_000;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    /// Writing the prompt cache (the 5-minute cache's price).
    pub cache_write: f64,
    pub cache_read: f64,
}

impl ModelPrice {
    /// `input, output, cache_write, cache_read` in USD per million tokens.
    pub const fn new(input: f64, output: f64, cache_write: f64, cache_read: f64) -> Self {
        Self {
            input,
            output,
            cache_write,
            cache_read,
        }
    }

    /// What `tokens` cost at this price, in USD (counts clamped to
    /// [`MAX_TOKENS_PER_CALL`]).
    pub fn cost(&self, tokens: &TokenUsage) -> f64 {
        let t = clamp_tokens(tokens);
        let per = |n: u64, usd_per_mtok: f64| n as f64 * usd_per_mtok / 1_000_000.0;
        per(t.input_tokens, self.input)
            + per(t.output_tokens, self.output)
            + per(t.cache_creation_input_tokens, self.cache_write)
            + per(t.cache_read_input_tokens, self.cache_read)
    }
}

/// Token counts with each clamped to [`MAX_TOKENS_PER_CALL`].
pub fn clamp_tokens(t: &TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: t.input_tokens.min(MAX_TOKENS_PER_CALL),
        output_tokens: t.output_tokens.min(MAX_TOKENS_PER_CALL),
        cache_creation_input_tokens: t.cache_creation_input_tokens.min(MAX_TOKENS_PER_CALL),
        cache_read_input_tokens: t.cache_read_input_tokens.min(MAX_TOKENS_PER_CALL),
    }
}

/// Prices by model-name prefix, with a fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    /// `(prefix, price)`; the longest matching prefix wins.
    pub models: Vec<(String, ModelPrice)>,
    /// The price of a model no prefix matches.
    pub fallback: ModelPrice,
}

/// Anthropic's list prices (USD per million tokens: input, output, 5-minute
/// cache write, cache read) for current Claude models.
pub const DEFAULT_PRICES: &[(&str, ModelPrice)] = &[
    ("claude-opus-4-5", ModelPrice::new(5.0, 25.0, 6.25, 0.50)),
    ("claude-opus-4-1", ModelPrice::new(15.0, 75.0, 18.75, 1.50)),
    ("claude-opus-4", ModelPrice::new(15.0, 75.0, 18.75, 1.50)),
    ("claude-sonnet-4", ModelPrice::new(3.0, 15.0, 3.75, 0.30)),
    ("claude-3-7-sonnet", ModelPrice::new(3.0, 15.0, 3.75, 0.30)),
    ("claude-haiku-4-5", ModelPrice::new(1.0, 5.0, 1.25, 0.10)),
    ("claude-3-5-haiku", ModelPrice::new(0.80, 4.0, 1.0, 0.08)),
    ("claude-3-haiku", ModelPrice::new(0.25, 1.25, 0.30, 0.03)),
];

/// The price of a model not in the table: the dearest one's (Opus 4.1).
pub const DEFAULT_FALLBACK: ModelPrice = ModelPrice::new(15.0, 75.0, 18.75, 1.50);

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            models: DEFAULT_PRICES
                .iter()
                .map(|(m, p)| ((*m).to_owned(), *p))
                .collect(),
            fallback: DEFAULT_FALLBACK,
        }
    }
}

impl PriceTable {
    /// The price of `model`.
    pub fn price(&self, model: &str) -> ModelPrice {
        self.models
            .iter()
            .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.fallback, |(_, p)| *p)
    }

    /// What `tokens` of `model` cost, in USD.
    pub fn cost(&self, model: &str, tokens: &TokenUsage) -> f64 {
        self.price(model).cost(tokens)
    }

    /// Replaces or adds an entry from `PREFIX=INPUT,OUTPUT,CACHE_WRITE,CACHE_READ`
    /// (USD per million tokens; `PREFIX` `*` sets the fallback).
    pub fn set_from_spec(&mut self, spec: &str) -> Result<(), String> {
        let (prefix, prices) = spec.split_once('=').ok_or_else(|| {
            format!("{spec:?}: expected MODEL=INPUT,OUTPUT,CACHE_WRITE,CACHE_READ")
        })?;
        let values: Vec<f64> = prices
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{spec:?}: prices must be numbers"))?;
        let [input, output, cache_write, cache_read] = values[..] else {
            return Err(format!("{spec:?}: expected four prices"));
        };
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!("{spec:?}: prices must be finite and not negative"));
        }
        let price = ModelPrice::new(input, output, cache_write, cache_read);
        let prefix = prefix.trim();
        if prefix == "*" {
            self.fallback = price;
        } else if prefix.is_empty() {
            return Err(format!("{spec:?}: the model name is empty"));
        } else if let Some(entry) = self.models.iter_mut().find(|(p, _)| p == prefix) {
            entry.1 = price;
        } else {
            self.models.push((prefix.to_owned(), price));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(i: u64, o: u64, w: u64, r: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: i,
            output_tokens: o,
            cache_creation_input_tokens: w,
            cache_read_input_tokens: r,
        }
    }

    #[test]
    fn models_take_their_familys_price_and_unknown_ones_the_dearest() {
        let t = PriceTable::default();
        assert_eq!(t.price("claude-sonnet-4-5-20250929").input, 3.0);
        assert_eq!(t.price("claude-opus-4-5").output, 25.0);
        assert_eq!(t.price("claude-opus-4-20250514").output, 75.0);
        assert_eq!(t.price("claude-haiku-4-5").cache_read, 0.10);
        assert_eq!(t.price("gpt-x"), DEFAULT_FALLBACK);
        let c = t.cost(
            "claude-sonnet-4-5",
            &tokens(1_000_000, 100_000, 0, 2_000_000),
        );
        assert!((c - (3.0 + 1.5 + 0.6)).abs() < 1e-9, "{c}");
        // Counts are clamped: one call's cost is bounded.
        let huge = t.cost("x", &tokens(u64::MAX, u64::MAX, u64::MAX, u64::MAX));
        assert!(huge.is_finite() && huge <= 110.25 * 100.0, "{huge}");
    }

    #[test]
    fn the_admin_overrides_a_price() {
        let mut t = PriceTable::default();
        t.set_from_spec("claude-sonnet-4=1,2,3,4").unwrap();
        t.set_from_spec("my-model=0,0,0,0").unwrap();
        t.set_from_spec("*=100,100,100,100").unwrap();
        assert_eq!(
            t.price("claude-sonnet-4-5"),
            ModelPrice::new(1.0, 2.0, 3.0, 4.0)
        );
        assert_eq!(t.price("my-model-1").input, 0.0);
        assert_eq!(t.price("unknown").input, 100.0);
        for bad in [
            "x",
            "x=1,2,3",
            "x=1,2,3,-4",
            "x=a,b,c,d",
            "=1,1,1,1",
            "x=1,2,3,NaN",
        ] {
            assert!(t.set_from_spec(bad).is_err(), "{bad}");
        }
    }
}

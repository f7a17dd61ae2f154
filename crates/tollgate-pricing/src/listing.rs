//! The price table as data: for `GET /v1/models` and `tollgate prices`.

use serde_json::{Value, json};

use crate::Endpoint;
use crate::table::PriceTable;

/// One sellable model with its prices (amounts in base units, as strings).
pub fn models(table: &PriceTable, endpoints: &[Endpoint]) -> Vec<Value> {
    let mut out = Vec::new();
    let policy = json!({"markup_bps": table.policy.markup_bps, "minimum_charge": table.policy.minimum_charge.to_string()});
    let entry = |id: &str, kind: &str, prices: Value| {
        json!({"id": id, "object": "model", "created": 0, "owned_by": "tollgate",
               "tollgate": {"kind": kind, "prices": prices, "policy": policy}})
    };
    let all_chat = endpoints.contains(&Endpoint::Chat) || endpoints.contains(&Endpoint::Responses);
    if all_chat || endpoints.contains(&Endpoint::Messages) {
        // The Messages route sells Claude models only.
        for (id, p) in table
            .chat
            .iter()
            .filter(|(_, p)| all_chat || p.is_anthropic())
        {
            let mut prices = json!({
                "input_per_mtok": p.input_per_mtok.to_string(),
                "cached_input_per_mtok": p.cached_input_per_mtok.map(|v| v.to_string()),
                "output_per_mtok": p.output_per_mtok.to_string(),
                "context_window": p.context_window,
                "max_output_tokens": p.max_output_tokens,
                "aliases": p.aliases,
            });
            if p.is_anthropic() {
                prices["provider"] = json!("anthropic");
                prices["cache_write_input_per_mtok"] =
                    json!(p.cache_write_input_per_mtok.map(|v| v.to_string()));
                prices["cache_write_1h_input_per_mtok"] =
                    json!(p.cache_write_1h_input_per_mtok.map(|v| v.to_string()));
                prices["default_max_tokens"] = json!(p.default_max_tokens);
            }
            out.push(entry(id, "chat", prices));
        }
    }
    if endpoints.contains(&Endpoint::Embeddings) {
        for (id, p) in &table.embeddings {
            out.push(entry(
                id,
                "embeddings",
                json!({"input_per_mtok": p.input_per_mtok.to_string()}),
            ));
        }
    }
    if endpoints.contains(&Endpoint::Images) {
        for (id, p) in &table.images {
            let per_image: serde_json::Map<String, Value> = p
                .per_image
                .iter()
                .map(|(k, v)| (k.clone(), json!(v.to_string())))
                .collect();
            out.push(entry(
                id,
                "images",
                json!({"per_image": per_image, "max_n": p.max_n}),
            ));
        }
    }
    if endpoints.contains(&Endpoint::Transcription) {
        for (id, p) in &table.transcription {
            out.push(entry(
                id,
                "transcription",
                json!({"per_minute": p.per_minute.to_string()}),
            ));
        }
    }
    if endpoints.contains(&Endpoint::Speech) {
        for (id, p) in &table.speech {
            out.push(entry(
                id,
                "speech",
                json!({"per_mchar": p.per_mchar.to_string()}),
            ));
        }
    }
    out
}

/// Base units as a decimal amount of the 6-decimal token (`2500000` → `2.500000`).
pub fn units(amount: u128) -> String {
    format!("{}.{:06}", amount / 1_000_000, amount % 1_000_000)
}

/// A human-readable rendering of the whole table.
pub fn render(table: &PriceTable) -> String {
    let mut out = String::new();
    let p = &table.policy;
    out.push_str(&format!(
        "Prices in token units (1.000000 = 1 USD-pegged token); markup {} bps, minimum charge {}\n\n",
        p.markup_bps,
        units(p.minimum_charge)
    ));
    out.push_str(&format!(
        "{:<28} {:>14} {:>14} {:>14} {:>14} {:>10}\n",
        "chat model", "input/Mtok", "cached/Mtok", "cache write", "output/Mtok", "max out"
    ));
    let or_dash = |v: Option<u128>| v.map(units).unwrap_or_else(|| "-".into());
    for (id, c) in &table.chat {
        out.push_str(&format!(
            "{id:<28} {:>14} {:>14} {:>14} {:>14} {:>10}\n",
            units(c.input_per_mtok),
            or_dash(c.cached_input_per_mtok),
            or_dash(c.cache_write_input_per_mtok),
            units(c.output_per_mtok),
            c.max_output_tokens
        ));
    }
    out.push_str(&format!(
        "\n{:<24} {:>14}\n",
        "embedding model", "input/Mtok"
    ));
    for (id, e) in &table.embeddings {
        out.push_str(&format!("{id:<24} {:>14}\n", units(e.input_per_mtok)));
    }
    out.push_str(&format!(
        "\n{:<24} {:<22} {:>14}\n",
        "image model", "quality:size", "per image"
    ));
    for (id, i) in &table.images {
        for (variant, price) in &i.per_image {
            out.push_str(&format!("{id:<24} {variant:<22} {:>14}\n", units(*price)));
        }
    }
    out.push_str(&format!(
        "\n{:<24} {:>14}\n",
        "transcription model", "per minute"
    ));
    for (id, t) in &table.transcription {
        out.push_str(&format!("{id:<24} {:>14}\n", units(t.per_minute)));
    }
    out.push_str(&format!("\n{:<24} {:>14}\n", "speech model", "per Mchar"));
    for (id, s) in &table.speech {
        out.push_str(&format!("{id:<24} {:>14}\n", units(s.per_mchar)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_exact() {
        assert_eq!(units(2_500_000), "2.500000");
        assert_eq!(units(1), "0.000001");
        assert_eq!(units(0), "0.000000");
    }

    #[test]
    fn listing_follows_the_endpoints_sold() {
        let table = PriceTable::builtin();
        let chat_only = models(&table, &[Endpoint::Chat]);
        assert!(chat_only.iter().all(|m| m["tollgate"]["kind"] == "chat"));
        assert!(chat_only.iter().any(|m| m["id"] == "gpt-4o"));
        let all = models(
            &table,
            &[
                Endpoint::Chat,
                Endpoint::Embeddings,
                Endpoint::Images,
                Endpoint::Speech,
            ],
        );
        assert!(all.len() > chat_only.len());
        assert!(render(&table).contains("gpt-4o"));
    }

    #[test]
    fn claude_models_are_listed_with_cache_prices() {
        let table = PriceTable::builtin();
        let chat = models(&table, &[Endpoint::Chat]);
        let sonnet = chat
            .iter()
            .find(|m| m["id"] == "claude-sonnet-4-5-20250929")
            .unwrap();
        let prices = &sonnet["tollgate"]["prices"];
        assert_eq!(prices["input_per_mtok"], "3000000");
        assert_eq!(prices["cached_input_per_mtok"], "300000");
        assert_eq!(prices["cache_write_input_per_mtok"], "3750000");
        assert_eq!(prices["cache_write_1h_input_per_mtok"], "6000000");
        assert_eq!(prices["default_max_tokens"], 4096);
        assert_eq!(prices["aliases"][0], "claude-sonnet-4-5");
        // The Messages route lists Claude models only.
        let native = models(&table, &[Endpoint::Messages]);
        assert!(!native.is_empty() && native.len() < chat.len());
        assert!(
            native
                .iter()
                .all(|m| m["tollgate"]["prices"]["provider"] == "anthropic")
        );
        let text = render(&table);
        assert!(text.contains("claude-haiku-4-5-20251001") && text.contains("3.750000"));
    }
}

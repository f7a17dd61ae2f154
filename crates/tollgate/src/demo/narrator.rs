//! Consistent, readable output for the walkthrough: numbered steps,
//! indented lines, amounts in base units and USD, shortened hashes.

use std::cell::Cell;
use std::io::Write;

use serde_json::Value;

/// Prints the walkthrough on stdout.
pub struct Narrator {
    total: usize,
    current: Cell<usize>,
}

impl Narrator {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            current: Cell::new(0),
        }
    }

    pub fn title(&self, text: &str) {
        println!("{text}");
        println!("{}", "=".repeat(text.chars().count()));
    }

    /// Runs one numbered step. On failure the step is marked failed and
    /// the error names it.
    pub async fn step<T>(
        &self,
        title: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let n = self.current.get() + 1;
        self.current.set(n);
        println!();
        println!("Step {n}/{} · {title}", self.total);
        match work.await {
            Ok(value) => Ok(value),
            Err(e) => {
                println!("  ✗ step {n} failed: {e:#}");
                flush();
                Err(e.context(format!("step {n} ({title}) failed")))
            }
        }
    }

    /// A sentence of the story.
    pub fn say(&self, text: impl AsRef<str>) {
        println!("  {}", text.as_ref());
    }

    /// Something that worked.
    pub fn ok(&self, text: impl AsRef<str>) {
        println!("  ✓ {}", text.as_ref());
    }

    /// An aligned `label  value` line under a sentence.
    pub fn field(&self, label: &str, value: impl AsRef<str>) {
        println!("      {label:<18} {}", value.as_ref());
    }

    /// A decoded receipt, field by field (hashes shortened; the
    /// challenge id, timestamp and a `reference` repeating the channel id
    /// left out).
    pub fn receipt(&self, title: &str, receipt: &Value) {
        self.say(format!("{title} (Payment-Receipt, decoded):"));
        let Some(fields) = receipt.as_object() else {
            return;
        };
        let channel = fields.get("channelId");
        for (key, value) in fields {
            let noise = matches!(
                key.as_str(),
                "challengeId" | "timestamp" | "method" | "intent"
            ) || (key == "reference" && Some(value) == channel);
            if noise {
                continue;
            }
            let units = match key.as_str() {
                "acceptedCumulative" | "spent" | "amount" => {
                    value.as_str().and_then(|s| s.parse::<u128>().ok())
                }
                _ => None,
            };
            let text = match (units, value) {
                (Some(units), _) => amount(units),
                (None, Value::String(s)) => short(s),
                (None, other) => other.to_string(),
            };
            self.field(key, text);
        }
    }
}

pub fn flush() {
    let _ = std::io::stdout().flush();
}

/// `42 base units (0.000042 USD)`.
pub fn amount(units: u128) -> String {
    format!("{units} base units ({} USD)", usd(units))
}

/// Base units of a 6-decimal token as a decimal: `0.000042`,
/// `1,234.500000`.
pub fn usd(units: u128) -> String {
    let whole = (units / 1_000_000).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:06}", units % 1_000_000)
}

/// `0x7099…79c8` for long hex strings; anything else as is.
pub fn short(text: &str) -> String {
    let hex = text.starts_with("0x") && text[2..].chars().all(|c| c.is_ascii_hexdigit());
    if hex && text.len() > 14 {
        let lower = text.to_ascii_lowercase();
        format!("{}…{}", &lower[..6], &lower[lower.len() - 4..])
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(usd(42), "0.000042");
        assert_eq!(usd(5_000_000), "5.000000");
        assert_eq!(usd(1_234_500_000), "1,234.500000");
        assert_eq!(usd(123_456_000_000), "123,456.000000");
        assert_eq!(amount(1_234_567), "1234567 base units (1.234567 USD)");
        assert_eq!(
            short("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            "0x7099…79c8"
        );
        assert_eq!(short("success"), "success");
        assert_eq!(short("0x12"), "0x12");
    }
}

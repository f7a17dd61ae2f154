//! `tollgate report`: revenue by day, route and model, from the ledger, as
//! a table or CSV. Charges count what they paid, sessions what they spent
//! (the ledger's own figures, so the totals are the ledger's).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use time::macros::format_description;
use tollgate_ledger::{RevenueQuery, RevenueRow};
use tollgate_server::Config;

const DAY: u32 = 86_400;

#[derive(Args)]
pub struct ReportArgs {
    /// Gateway config (TOML): the store to read.
    #[arg(long)]
    config: PathBuf,
    /// First day (UTC, YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Last day (UTC, YYYY-MM-DD), inclusive.
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
    /// Print CSV (one row per day, route, model and intent) instead of a table.
    #[arg(long)]
    csv: bool,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let config =
        Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    let ledger = tollgate_server::open_store(&config).await?;
    let query = RevenueQuery {
        since: args.since.as_deref().map(day_start).transpose()?,
        until: args
            .until
            .as_deref()
            .map(|d| day_start(d).map(|t| t + i64::from(DAY)))
            .transpose()?,
        bucket_secs: Some(DAY),
    };
    let rows = ledger.revenue(query).await?;
    if args.csv {
        print!("{}", csv(&rows));
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

fn day_start(text: &str) -> anyhow::Result<i64> {
    let date = time::Date::parse(text, format_description!("[year]-[month]-[day]"))
        .with_context(|| format!("{text:?} is not a date (YYYY-MM-DD)"))?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

fn day(bucket: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(bucket)
        .ok()
        .and_then(|t| t.format(format_description!("[year]-[month]-[day]")).ok())
        .unwrap_or_else(|| bucket.to_string())
}

fn model(row: &RevenueRow) -> &str {
    if row.model.is_empty() {
        "-"
    } else {
        &row.model
    }
}

pub fn csv(rows: &[RevenueRow]) -> String {
    let mut out = String::from(
        "day,route,model,intent,requests,input_tokens,output_tokens,amount_base_units,refunded_base_units\n",
    );
    for row in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            day(row.bucket),
            field(&row.route),
            field(model(row)),
            row.intent.as_str(),
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.amount,
            row.refunded
        ));
    }
    out
}

/// RFC 4180 quoting where needed.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

pub fn table(rows: &[RevenueRow]) -> String {
    let route_width = rows.iter().map(|r| r.route.len()).max().unwrap_or(5).max(5);
    let model_width = rows
        .iter()
        .map(|r| model(r).len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<10}  {:<route_width$}  {:<model_width$}  {:<7}  {:>8}  {:>10}  {:>10}  {:>14}  {:>14}\n",
        "day",
        "route",
        "model",
        "intent",
        "requests",
        "tokens in",
        "tokens out",
        "base units",
        "amount"
    );
    let (mut requests, mut amount) = (0u64, 0u128);
    for row in rows {
        requests += row.requests;
        amount += row.amount;
        out.push_str(&format!(
            "{:<10}  {:<route_width$}  {:<model_width$}  {:<7}  {:>8}  {:>10}  {:>10}  {:>14}  {:>14}\n",
            day(row.bucket),
            row.route,
            model(row),
            row.intent.as_str(),
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.amount,
            tollgate_pricing::listing::units(row.amount)
        ));
    }
    out.push_str(&format!(
        "{:<10}  {:<route_width$}  {:<model_width$}  {:<7}  {:>8}  {:>10}  {:>10}  {:>14}  {:>14}\n",
        "total",
        "",
        "",
        "",
        requests,
        "",
        "",
        amount,
        tollgate_pricing::listing::units(amount)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_ledger::RevenueIntent;

    #[test]
    fn csv_and_table_carry_every_row_and_the_total() {
        let rows = vec![
            RevenueRow {
                bucket: 1_764_547_200,
                route: "POST /v1/chat/completions".into(),
                model: "gpt-4o-mini".into(),
                intent: RevenueIntent::Charge,
                requests: 2,
                amount: 19_666,
                input_tokens: 16,
                output_tokens: 20,
                refunded: 0,
            },
            RevenueRow {
                bucket: 1_764_547_200,
                route: "POST /v1/embeddings".into(),
                model: String::new(),
                intent: RevenueIntent::Session,
                requests: 1,
                amount: 5,
                input_tokens: 0,
                output_tokens: 0,
                refunded: 0,
            },
        ];
        let csv = csv(&rows);
        assert_eq!(
            csv.lines().nth(1),
            Some("2025-12-01,POST /v1/chat/completions,gpt-4o-mini,charge,2,16,20,19666,0")
        );
        assert_eq!(csv.lines().count(), 3);
        let table = table(&rows);
        let total = table.lines().last().unwrap();
        assert!(
            total.starts_with("total") && total.contains("19671") && total.contains("0.019671"),
            "{table}"
        );
        assert_eq!(day_start("2025-12-01").unwrap(), 1_764_547_200);
        assert!(day_start("12/01/2025").is_err());
    }
}

//! The operator dashboard: a static page (embedded in the binary) and the
//! JSON it draws, built from the ledger (revenue, channels) and the metrics
//! layer's recent samples (latency, refusals).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_ledger::{ChannelRecord, ChannelStatus, LedgerError, RevenueIntent, RevenueQuery};

use super::AdminState;
use super::ledger_metrics::{ChannelTotals, decimal, exposure, now};
use super::recorder::Latency;

const PAGE: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    response
}

/// `?days=N&bucket=hour|day`.
#[derive(Debug, Default)]
pub struct Range {
    /// How many days back (default 7).
    days: Option<u32>,
    /// `hour` (default) or `day`.
    bucket: Option<String>,
}

impl Range {
    fn parse(query: Option<&str>) -> Self {
        let mut range = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("days", v)) => range.days = v.parse().ok(),
                Some(("bucket", v)) => range.bucket = Some(v.to_owned()),
                _ => {}
            }
        }
        range
    }
}

pub async fn data(State(state): State<AdminState>, RawQuery(query): RawQuery) -> Response {
    let range = Range::parse(query.as_deref());
    match build(&state, &range).await {
        Ok(value) => {
            let mut response = Json(value).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard data could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the ledger could not be read\n",
            )
                .into_response()
        }
    }
}

async fn build(state: &AdminState, range: &Range) -> Result<Value, LedgerError> {
    let now = now();
    let days = range.days.unwrap_or(7).clamp(1, 366);
    let bucket_secs: u32 = match range.bucket.as_deref() {
        Some("day") => 86_400,
        _ => 3_600,
    };
    let width = i64::from(bucket_secs);
    let since = (now - i64::from(days) * 86_400) / width * width;
    let rows = match state
        .ledger
        .revenue(RevenueQuery {
            since: Some(since),
            until: None,
            bucket_secs: Some(bucket_secs),
        })
        .await
    {
        Ok(rows) => rows,
        Err(LedgerError::Unsupported(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let channels = state.ledger.channels().await?;
    let totals = ChannelTotals::of(&channels, now);

    let mut revenue = Revenue::default();
    let mut series: BTreeMap<i64, Bucket> = BTreeMap::new();
    for row in &rows {
        let model = if row.model.is_empty() {
            "(fixed price)".to_owned()
        } else {
            row.model.clone()
        };
        revenue.total += row.amount;
        match row.intent {
            RevenueIntent::Charge => revenue.charged += row.amount,
            RevenueIntent::Session => revenue.session_spent += row.amount,
        }
        revenue.refunded += row.refunded;
        revenue.requests += row.requests;
        add(&mut revenue.by_model, &model, row.amount, row.requests);
        add(&mut revenue.by_route, &row.route, row.amount, row.requests);
        let bucket = series.entry(row.bucket).or_default();
        *bucket.by_model.entry(model).or_default() += row.amount;
        *bucket.by_route.entry(row.route.clone()).or_default() += row.amount;
    }
    let series: Vec<Value> = series
        .into_iter()
        .map(|(at, b)| {
            json!({
                "at": at,
                "by_model": strings(&b.by_model),
                "by_route": strings(&b.by_route),
            })
        })
        .collect();
    let (recent, by_code) = state.observer.refusals();
    Ok(json!({
        "generated_at": now,
        "decimals": 6,
        "range": {"since": since, "until": now, "bucket_secs": bucket_secs, "days": days},
        "revenue": {
            "total": revenue.total.to_string(),
            "charged": revenue.charged.to_string(),
            "session_spent": revenue.session_spent.to_string(),
            "refunded": revenue.refunded.to_string(),
            "requests": revenue.requests,
            "by_model": ranked(revenue.by_model),
            "by_route": ranked(revenue.by_route),
            "series": series,
        },
        "channels": {
            "totals": totals,
            "list": channels.iter().map(ChannelRow::of).collect::<Vec<_>>(),
        },
        "latency": latency(&state.observer.latencies()),
        "refusals": {"by_code": by_code, "recent": recent.into_iter().take(50).collect::<Vec<_>>()},
    }))
}

#[derive(Default)]
struct Revenue {
    total: u128,
    charged: u128,
    session_spent: u128,
    refunded: u128,
    requests: u64,
    by_model: BTreeMap<String, (u128, u64)>,
    by_route: BTreeMap<String, (u128, u64)>,
}

#[derive(Default)]
struct Bucket {
    by_model: BTreeMap<String, u128>,
    by_route: BTreeMap<String, u128>,
}

fn add(map: &mut BTreeMap<String, (u128, u64)>, key: &str, amount: u128, requests: u64) {
    let entry = map.entry(key.to_owned()).or_default();
    entry.0 += amount;
    entry.1 += requests;
}

fn strings(map: &BTreeMap<String, u128>) -> BTreeMap<&str, String> {
    map.iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect()
}

/// Largest first.
fn ranked(map: BTreeMap<String, (u128, u64)>) -> Vec<Value> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    entries
        .into_iter()
        .map(|(name, (amount, requests))| {
            json!({"name": name, "amount": amount.to_string(), "requests": requests})
        })
        .collect()
}

/// A channel as the dashboard lists it (no payer or signer addresses).
#[derive(Serialize)]
struct ChannelRow {
    id: String,
    status: &'static str,
    #[serde(with = "decimal")]
    deposit: u128,
    #[serde(with = "decimal")]
    accepted: u128,
    #[serde(with = "decimal")]
    spent: u128,
    #[serde(with = "decimal")]
    reserved: u128,
    #[serde(with = "decimal")]
    settled: u128,
    #[serde(with = "decimal")]
    exposure: u128,
    opened_at: i64,
    last_settled_at: Option<i64>,
    settling: bool,
}

impl ChannelRow {
    fn of(channel: &ChannelRecord) -> Self {
        Self {
            id: channel.channel_id.clone(),
            status: channel.status.as_str(),
            deposit: channel.deposit,
            accepted: channel.accepted,
            spent: channel.spent,
            reserved: channel.reserved,
            settled: channel.settled,
            exposure: if channel.status == ChannelStatus::Finalized {
                0
            } else {
                exposure(channel)
            },
            opened_at: channel.opened_at,
            last_settled_at: channel.last_settled_at,
            settling: channel.inflight.is_some(),
        }
    }
}

/// Percentiles (milliseconds) per route and overall, over the recent window.
fn latency(samples: &[Latency]) -> Value {
    let mut by_route: BTreeMap<&str, Vec<&Latency>> = BTreeMap::new();
    for sample in samples {
        by_route.entry(&*sample.route).or_default().push(sample);
    }
    let all: Vec<&Latency> = samples.iter().collect();
    let mut routes: Vec<Value> = by_route
        .into_iter()
        .map(|(route, samples)| percentiles(route, &samples))
        .collect();
    routes.sort_by(|a, b| b["count"].as_u64().cmp(&a["count"].as_u64()));
    json!({"overall": percentiles("all", &all), "routes": routes})
}

fn percentiles(route: &str, samples: &[&Latency]) -> Value {
    let pick = |get: fn(&Latency) -> Option<Duration>| {
        let mut values: Vec<Duration> = samples.iter().filter_map(|s| get(s)).collect();
        values.sort();
        let at = |q: f64| -> Value {
            if values.is_empty() {
                return Value::Null;
            }
            let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            json!((values[index].as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0)
        };
        json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)})
    };
    json!({
        "route": route,
        "count": samples.len(),
        "ttfb_ms": pick(|s| Some(s.ttfb)),
        "total_ms": pick(|s| Some(s.total)),
        "upstream_ms": pick(|s| s.upstream),
        "overhead_ms": pick(|s| s.overhead),
    })
}

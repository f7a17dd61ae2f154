//! The admin listener: Prometheus metrics after known paid traffic on a
//! real local chain (exact revenue and request counts, equal to the
//! ledger's), labels and logs free of secrets, and the token it requires.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::Duration;

use common::traffic::{self, CHAT, PROMPT};
use common::*;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::{Ledger, RevenueIntent, RevenueQuery};
use tollgate_mock::MockOptions;

fn options() -> Options {
    Options {
        quoted: true,
        session: true,
        admin: true,
        ..Options::default()
    }
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(h: &Harness, admin: &str) -> String {
    let response = h
        .http
        .get(format!("{admin}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_after_paid_traffic_shows_the_exact_revenue_and_counts() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options();
    let gw = h.gateway(&options).await;
    let admin = gw.admin_url.clone().expect("the admin listener runs");
    let sent = traffic::send(&h, &gw).await;
    let ledger = h.ledger(&options);

    // Usage records are written just after the answers: wait for the last.
    let mut text = String::new();
    for _ in 0..200 {
        text = scrape(&h, &admin).await;
        let spent = sample(
            &text,
            "tollgate_revenue_base_units_total",
            &[("intent", "session"), ("state", "spent")],
        );
        if spent == Some(sent.session_spent as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revenue = |intent: &str, model: &str, state: &str| {
        sample(
            &text,
            "tollgate_revenue_base_units_total",
            &[
                ("route", CHAT),
                ("model", model),
                ("intent", intent),
                ("state", state),
            ],
        )
    };
    // Exactly what the payer paid: the charges' challenge amounts, and what
    // the session receipts say was spent.
    assert_eq!(
        revenue("charge", "gpt-4o-mini", "charged"),
        Some(sent.charged as f64),
        "{text}"
    );
    assert_eq!(
        revenue("session", "gpt-4o", "spent"),
        Some(sent.session_spent as f64),
        "{text}"
    );
    let paid = |intent: &str, model: &str| {
        sample(
            &text,
            "tollgate_paid_requests_total",
            &[("route", CHAT), ("model", model), ("intent", intent)],
        )
    };
    assert_eq!(paid("charge", "gpt-4o-mini"), Some(sent.charges as f64));
    assert_eq!(
        paid("session", "gpt-4o"),
        Some(sent.session_requests as f64)
    );

    // And the ledger's own figures agree.
    let rows = ledger.revenue(RevenueQuery::totals()).await.unwrap();
    let ledger_total = |intent| -> u128 {
        rows.iter()
            .filter(|r| r.intent == intent)
            .map(|r| r.amount)
            .sum()
    };
    assert_eq!(ledger_total(RevenueIntent::Charge), sent.charged);
    let charges: u128 = ledger
        .recent_charges(100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.amount.parse::<u128>().unwrap())
        .sum();
    assert_eq!(charges, sent.charged);
    let channel = h.stored_channel(&options, sent.channel).await;
    assert_eq!(channel.spent, sent.session_spent);
    assert_eq!(ledger_total(RevenueIntent::Session), channel.spent);

    // Request counts by route and status, and payment outcomes.
    let requests = |status: &str| {
        sample(
            &text,
            "tollgate_requests_total",
            &[("route", CHAT), ("status", status)],
        )
    };
    let served = (sent.charges + sent.session_requests) as f64;
    assert_eq!(requests("200"), Some(served));
    assert_eq!(requests("402"), Some(sent.unpaid as f64));
    assert_eq!(requests("400"), Some(2.0));
    let outcome = |intent: &str, outcome: &str| {
        sample(
            &text,
            "tollgate_payment_outcomes_total",
            &[("intent", intent), ("outcome", outcome)],
        )
    };
    assert_eq!(outcome("charge", "paid"), Some(sent.charges as f64));
    assert_eq!(
        outcome("session", "paid"),
        Some(sent.session_requests as f64)
    );
    assert_eq!(
        outcome("none", "payment-required"),
        Some(sent.unpaid as f64)
    );
    let problems = |code: &str| {
        sample(
            &text,
            "tollgate_problems_total",
            &[("route", CHAT), ("code", code)],
        )
    };
    assert_eq!(problems("invalid-json"), Some(1.0));
    assert_eq!(problems("unknown-model"), Some(1.0));

    // Tokens by model, from the usage records.
    let usage: Vec<_> = rows.iter().filter(|r| r.model == "gpt-4o").collect();
    let input: u64 = usage.iter().map(|r| r.input_tokens).sum();
    assert!(input > 0);
    assert_eq!(
        sample(
            &text,
            "tollgate_tokens_total",
            &[("model", "gpt-4o"), ("direction", "input")]
        ),
        Some(input as f64)
    );

    // Channels and exposure, from the ledger.
    assert_eq!(
        sample(&text, "tollgate_channels", &[("status", "open")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "tollgate_exposure_base_units", &[]),
        Some((channel.accepted - channel.settled) as f64)
    );
    assert_eq!(
        sample(&text, "tollgate_channel_spent_base_units", &[]),
        Some(channel.spent as f64)
    );
    assert!(sample(&text, "tollgate_settlement_lag_seconds", &[]).is_some());
    assert_eq!(
        sample(&text, "tollgate_settlement_failures_total", &[]),
        Some(0.0)
    );

    // Histograms of the phases Server-Timing names, and of the stream.
    for phase in ["payment", "upstream", "deliver", "overhead"] {
        let count = sample(
            &text,
            "tollgate_phase_seconds_count",
            &[("route", CHAT), ("phase", phase)],
        );
        assert!(count.is_some_and(|c| c >= 2.0), "{phase}: {text}");
    }
    assert_eq!(
        sample(
            &text,
            "tollgate_time_to_first_byte_seconds_count",
            &[("route", CHAT)]
        ),
        sample(
            &text,
            "tollgate_request_duration_seconds_count",
            &[("route", CHAT)]
        ),
    );

    // No label (or value) carries an address, a key, a credential, a
    // signature, the prompt or the admin token; the logs neither.
    let lowered = text.to_ascii_lowercase();
    let mut secrets: Vec<String> = vec![
        DEV_ACCOUNTS[PAYER].address.to_owned(),
        DEV_ACCOUNTS[RECIPIENT].address.to_owned(),
        DEV_ACCOUNTS[PAYER].private_key.to_owned(),
        SECRET.to_owned(),
        UPSTREAM_KEY.to_owned(),
        ADMIN_TOKEN.to_owned(),
        PROMPT.to_owned(),
        format!("{:#x}", sent.channel.id),
    ];
    for credential in &sent.credentials {
        secrets.push(credential.trim_start_matches("Payment ").to_owned());
    }
    for secret in &secrets {
        let needle = secret.to_ascii_lowercase();
        let needle = needle.trim_start_matches("0x");
        assert!(
            !lowered.contains(needle),
            "a secret ({}…) is in the metrics",
            &secret[..8]
        );
    }
    let as_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    logs::assert_absent(&as_refs);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_requests_without_its_token() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let gw = h.gateway(&options()).await;
    let admin = gw.admin_url.clone().unwrap();
    for path in ["/metrics", "/", "/api/dashboard", "/dashboard.js"] {
        let url = format!("{admin}{path}");
        let none = h.http.get(&url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert!(
            none.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
        let body = none.text().await.unwrap();
        assert!(!body.contains("tollgate_"), "{path}: nothing leaks");
        for wrong in [
            "wrong-token-0123456789abcdef",
            &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
        ] {
            let refused = h.http.get(&url).bearer_auth(wrong).send().await.unwrap();
            assert_eq!(refused.status(), 401, "{path}");
        }
        // The payment scheme is not a way in either.
        let payment = h
            .http
            .get(&url)
            .header("authorization", format!("Payment {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(payment.status(), 401);
        let bearer = h
            .http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), 200, "{path}");
        let basic = h
            .http
            .get(&url)
            .basic_auth("operator", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 200, "{path}");
    }
    // The public listener serves none of it.
    let public = h
        .http
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    gw.stop().await;
}

#[test]
fn the_admin_listener_is_off_unless_configured_and_needs_a_token() {
    let h_dir = tempfile::tempdir().unwrap();
    let base = |admin: &str| {
        format!(
            r#"
[payments]
challenge_secrets = [{{ env = "S" }}]
[chain]
rpc_url = "http://127.0.0.1:1"
chain_id = 42431
currency = "0x20c0000000000000000000000000000000000000"
recipient = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
{admin}
"#
        )
    };
    let env = || {
        vec![
            ("S".to_owned(), SECRET.to_owned()),
            ("T".to_owned(), ADMIN_TOKEN.to_owned()),
            ("SHORT".to_owned(), "short".to_owned()),
        ]
    };
    let load = |text: String| tollgate_server::Config::from_toml(&text, h_dir.path(), env());
    assert!(load(base("")).unwrap().admin.is_none());
    let on = load(base(
        "[admin]\nlisten = \"127.0.0.1:9402\"\ntoken = { env = \"T\" }",
    ))
    .unwrap();
    assert_eq!(on.admin.unwrap().listen.port(), 9402);
    for (admin, key) in [
        ("[admin]\nlisten = \"127.0.0.1:9402\"", "admin.token"),
        (
            "[admin]\nlisten = \"127.0.0.1:9402\"\ntoken = { env = \"SHORT\" }",
            "admin.token",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:8402\"\ntoken = { env = \"T\" }",
            "admin.listen",
        ),
        (
            "[admin]\nlisten = \"nowhere\"\ntoken = { env = \"T\" }",
            "admin.listen",
        ),
    ] {
        let error = load(base(admin)).unwrap_err().to_string();
        assert!(error.contains(key), "{admin}: {error}");
    }
}

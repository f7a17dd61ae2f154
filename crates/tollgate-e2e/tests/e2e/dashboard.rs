//! The operator dashboard in a real headless browser (Debian's Chromium,
//! driven by npm playwright-core): after paid requests on the local chain
//! the figures it shows equal the ledger's; a screenshot is saved.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::Duration;

use common::node::{playwright_prefix, run_script};
use common::traffic::{self, CHAT};
use common::*;
use tollgate_ledger::{Ledger, RevenueIntent, RevenueQuery};
use tollgate_mock::MockOptions;
use tollgate_pricing::listing::units;

const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_ledgers_figures() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Debian's chromium is required (.ci/run installs it)"
    );
    let prefix = playwright_prefix().await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        admin: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let sent = traffic::send(&h, &gw).await;
    let ledger = h.ledger(&options);

    // The usage records land just after the answers.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = ledger.revenue(RevenueQuery::totals()).await.unwrap();
        let session: u128 = rows
            .iter()
            .filter(|r| r.intent == RevenueIntent::Session)
            .map(|r| r.amount)
            .sum();
        if session == sent.session_spent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = |intent: Option<RevenueIntent>| -> u128 {
        rows.iter()
            .filter(|r| intent.is_none_or(|i| r.intent == i))
            .map(|r| r.amount)
            .sum()
    };
    let channel = h.stored_channel(&options, sent.channel).await;

    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let screenshot = out.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = tempfile::tempdir().unwrap();
    let shown = run_script(
        &prefix,
        "dashboard_check.mjs",
        &[
            ("ADMIN_URL", gw.admin_url.as_deref().unwrap()),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("SCREENSHOT", screenshot.to_str().unwrap()),
            ("PROFILE", profile.path().to_str().unwrap()),
            ("CHROMIUM", CHROMIUM),
        ],
    )
    .await;
    assert_eq!(shown["status"], 200);
    assert_eq!(shown["errors"], serde_json::json!([]), "no script errors");

    // The cards: exact amounts, as the ledger has them.
    let card = |name: &str, amount: u128| {
        assert_eq!(
            shown["cards"][name]["value"],
            amount.to_string(),
            "{name}: {shown}"
        );
        assert_eq!(shown["cards"][name]["text"], units(amount), "{name}");
    };
    card("total", total(None));
    card("charged", total(Some(RevenueIntent::Charge)));
    card("session", total(Some(RevenueIntent::Session)));
    card("refunded", rows.iter().map(|r| r.refunded).sum());
    card("settled", channel.settled);
    card("exposure", channel.accepted - channel.settled);
    assert_eq!(shown["cards"]["open"]["text"], "1");
    assert_eq!(total(Some(RevenueIntent::Charge)), sent.charged);
    assert_eq!(total(Some(RevenueIntent::Session)), channel.spent);

    // Revenue by model and by route.
    let by = |list: &str, name: &str| -> serde_json::Value {
        shown[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}: {shown}"))
            .clone()
    };
    for (model, intent) in [
        ("gpt-4o-mini", RevenueIntent::Charge),
        ("gpt-4o", RevenueIntent::Session),
    ] {
        let expected: u128 = rows
            .iter()
            .filter(|r| r.model == model && r.intent == intent)
            .map(|r| r.amount)
            .sum();
        let row = by("byModel", model);
        assert_eq!(row["amount"], expected.to_string());
        assert_eq!(row["shown"], units(expected));
    }
    assert_eq!(by("byRoute", CHAT)["shown"], units(total(None)));

    // The channel, field by field.
    let id = format!("{:#x}", sent.channel.id);
    let listed = shown["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .expect("the channel is listed")
        .clone();
    for (field, amount) in [
        ("deposit", channel.deposit),
        ("accepted", channel.accepted),
        ("spent", channel.spent),
        ("settled", channel.settled),
        ("exposure", channel.accepted - channel.settled),
    ] {
        assert_eq!(listed[field], units(amount), "{field}");
    }

    // Charts drawn, latency and refusals listed.
    assert!(shown["modelBars"].as_u64().unwrap() >= 2, "{shown}");
    assert!(shown["routeBars"].as_u64().unwrap() >= 1);
    let latency: Vec<&str> = shown["latencyRows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        latency.contains(&"all") && latency.contains(&CHAT),
        "{latency:?}"
    );
    assert_eq!(shown["refusalCodes"]["payment-required"], sent.unpaid);
    assert_eq!(shown["refusalCodes"]["invalid-json"], 1);
    assert_eq!(shown["refusalCodes"]["unknown-model"], 1);
    assert!(shown["recentRefusals"].as_u64().unwrap() >= 6);

    let png = std::fs::read(&screenshot).expect("a screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    eprintln!("dashboard screenshot: {}", screenshot.display());
    gw.stop().await;
}

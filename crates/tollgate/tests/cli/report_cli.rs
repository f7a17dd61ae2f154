//! `tollgate report` over a gateway's ledger after paid traffic on a real
//! local chain: its totals equal the ledger's, as a table and as CSV.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::time::Duration;

use common::traffic::{self, CHAT};
use common::*;
use support::run_cli;
use tollgate_ledger::{Ledger, RevenueIntent, RevenueQuery};
use tollgate_mock::MockOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn report_totals_equal_the_ledgers() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let sent = traffic::send(&h, &gw).await;
    let ledger = h.ledger(&options);
    let channel = h.stored_channel(&options, sent.channel).await;
    // The usage records land just after the answers.
    for _ in 0..200 {
        let rows = ledger.revenue(RevenueQuery::totals()).await.unwrap();
        let session: u128 = rows
            .iter()
            .filter(|r| r.intent == RevenueIntent::Session)
            .map(|r| r.amount)
            .sum();
        if session == channel.spent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ledger's own records: settled charges and channel spend.
    let charged: u128 = ledger
        .recent_charges(1000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.amount.parse::<u128>().unwrap())
        .sum();
    assert_eq!(charged, sent.charged);
    let expected = charged + channel.spent;

    let csv = run_cli(&h, &options, "report", &["--csv"]).await;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "day,route,model,intent,requests,input_tokens,output_tokens,amount_base_units,refunded_base_units"
        )
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let sum = |intent: Option<&str>| -> u128 {
        rows.iter()
            .filter(|r| intent.is_none_or(|i| r[3] == i))
            .map(|r| r[7].parse::<u128>().unwrap())
            .sum()
    };
    assert_eq!(sum(None), expected);
    assert_eq!(sum(Some("charge")), charged);
    assert_eq!(sum(Some("session")), channel.spent);
    let requests: u64 = rows.iter().map(|r| r[4].parse::<u64>().unwrap()).sum();
    assert_eq!(requests, sent.charges + sent.session_requests);
    let today = time_today();
    for row in &rows {
        assert_eq!(row[0], today);
        assert_eq!(row[1], CHAT);
    }
    let models: Vec<&str> = rows.iter().map(|r| r[2]).collect();
    assert!(models.contains(&"gpt-4o-mini") && models.contains(&"gpt-4o"));

    let table = run_cli(&h, &options, "report", &[]).await;
    let total = table.lines().last().unwrap();
    assert!(total.starts_with("total"), "{table}");
    let fields: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(fields[1].parse::<u64>().unwrap(), requests);
    assert_eq!(fields[2].parse::<u128>().unwrap(), expected, "{table}");
    assert_eq!(fields[3], tollgate_pricing::listing::units(expected));

    // A range without traffic reports nothing.
    let empty = run_cli(
        &h,
        &options,
        "report",
        &["--csv", "--since", "2000-01-01", "--until", "2000-01-31"],
    )
    .await;
    assert_eq!(empty.lines().count(), 1);
    gw.stop().await;
}

fn time_today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

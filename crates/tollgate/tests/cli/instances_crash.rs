//! Several real `tollgate` processes on one PostgreSQL database, one of
//! them killed with SIGKILL: mid-stream (the others keep serving, its hold
//! frees itself after its lease, nothing is charged twice, its restart
//! releases nothing of the others'), and as the settlement leader
//! mid-settlement (another instance takes over and finishes it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::time::Duration;

use common::session::{receipt, session_challenge};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use support::{launch, launch_on};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::ChannelStatus;
use tollgate_mock::MockOptions;

const LEASE_SECS: u64 = 6;

fn options(pg: &str, id: &str, extra: &str) -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: extra.into(),
        pg_url: Some(pg.into()),
        instance_id: Some(id.into()),
        lease_secs: Some(LEASE_SECS),
        ..Options::default()
    }
}

fn chat(stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 400,
        "stream": stream,
    })
    .to_string()
}

async fn challenge_for(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    session_challenge(&challenges(&post(&h.http, url, body, None).await))
}

fn quote(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn spent(response: &reqwest::Response) -> u128 {
    receipt(response)["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads `stream` until it has delivered `events` content events.
async fn read_content(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    events: usize,
) {
    let mut seen = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += String::from_utf8_lossy(&chunk)
            .matches("\"content\"")
            .count();
        if seen >= events {
            return;
        }
    }
    panic!("the stream ended after {seen} content events");
}

/// The rest of a stream; its final `payment-receipt` event.
async fn final_receipt(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Option<Value> {
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter(|e| e.starts_with("event: payment-receipt"))
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .last()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_three_killed_mid_stream_the_others_serve_and_its_hold_expires() {
    let Some(pg) = pg_database().await else {
        return;
    };
    // A slow stream: 150 tokens, 20 ms apart.
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        chunk_interval: Duration::from_millis(20),
        ..MockOptions::default()
    })
    .await;
    let extra = "settle_interval_secs = 3600\n";
    let gw1 = launch(&h, &options(&pg, "gw-1", extra)).await;
    let gw2 = launch(&h, &options(&pg, "gw-2", extra)).await;
    let gw3 = launch(&h, &options(&pg, "gw-3", extra)).await;
    let url = |gw: &support::Process| format!("{}/v1/chat/completions", gw.url);
    let ledger = h.store(&options(&pg, "observer", extra)).await;
    let payer = h.payer();

    let body = chat(false);
    let challenge = challenge_for(&h, &url(&gw2), &body).await;
    let accepted = 10 * quote(&challenge);
    let (channel, open) = payer.open(&challenge, 1_000_000, accepted).await;
    let first = post(&h.http, &url(&gw2), &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let cost = spent(&first);
    let id = format!("{:#x}", channel.id);
    let voucher = payer.pay_voucher(&challenge, channel, accepted);

    // A stream on gw1; SIGKILL after some content.
    let stream_body = chat(true);
    let stream_challenge = challenge_for(&h, &url(&gw1), &stream_body).await;
    let response = post(
        &h.http,
        &url(&gw1),
        &stream_body,
        Some(&payer.pay_voucher(&stream_challenge, channel, accepted)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    read_content(&mut stream, 10).await;
    let gw1_port = gw1.port;
    gw1.kill().await;
    drop(stream);
    let held = ledger.channel(&id).await.unwrap().unwrap().reserved;
    assert!(held > 0, "the dead stream's hold is still there");

    // The others keep serving, beside the dead instance's hold.
    for gw in [&gw2, &gw3] {
        let response = post(&h.http, &url(gw), &body, Some(&voucher)).await;
        assert_eq!(response.status(), 200);
    }
    // Its lease runs out and a live instance's keeper frees the hold.
    wait_for("the dead instance's hold to expire", async || {
        ledger.channel(&id).await.unwrap().unwrap().reserved == 0
    })
    .await;
    let stored = ledger.channel(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.spent,
        3 * cost,
        "the killed stream charged nothing, nothing was charged twice"
    );

    // gw1 comes back under its id while gw2 streams: gw2's hold stays.
    let response = post(
        &h.http,
        &url(&gw2),
        &stream_body,
        Some(&payer.pay_voucher(&stream_challenge, channel, accepted)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    read_content(&mut stream, 5).await;
    let held = ledger.channel(&id).await.unwrap().unwrap().reserved;
    assert!(held > 0);
    let gw1 = launch_on(&h, &options(&pg, "gw-1", extra), gw1_port).await;
    assert_eq!(
        ledger.channel(&id).await.unwrap().unwrap().reserved,
        held,
        "the restart released nothing of gw2's"
    );
    let last = final_receipt(&mut stream)
        .await
        .expect("gw2's stream commits");
    let stored = ledger.channel(&id).await.unwrap().unwrap();
    assert_eq!(last["spent"].as_str().unwrap(), stored.spent.to_string());
    assert_eq!(stored.reserved, 0);
    assert!(stored.spent <= stored.accepted);
    // And the restarted instance serves the same channel.
    assert_eq!(
        post(&h.http, &url(&gw1), &body, Some(&voucher))
            .await
            .status(),
        200
    );
    for gw in [gw1, gw2, gw3] {
        gw.kill().await;
    }
}

/// Whether some session holds an advisory lock (the settlement leader's;
/// migrations only take transaction-scoped ones).
async fn leader_lock_held(pg: &str) -> bool {
    let (client, connection) = tokio_postgres::connect(pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_settlement_leader_killed_mid_settlement_is_succeeded() {
    let Some(pg) = pg_database().await else {
        return;
    };
    let h = Harness::start_sessions(MockOptions::default()).await;
    let extra = "settle_interval_secs = 1\n";
    let leader = launch(&h, &options(&pg, "gw-leader", extra)).await;
    wait_for("the first instance to lead", async || {
        leader_lock_held(&pg).await
    })
    .await;
    let follower = launch(&h, &options(&pg, "gw-follower", extra)).await;
    let ledger = h.store(&options(&pg, "observer", extra)).await;
    let url = format!("{}/v1/chat/completions", leader.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    let body = chat(false);
    let challenge = challenge_for(&h, &url, &body).await;
    let (channel, open) = payer.open(&challenge, 1_000_000, quote(&challenge)).await;
    let first = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let spent = spent(&first);

    // Stop mining; the leader signs, records and sends the close, which
    // waits unconfirmed; kill the leader then.
    let rpc = h.devnet.rpc();
    let _: Value = rpc.call("evm_setAutomine", json!([false])).await.unwrap();
    let closing = {
        let http = h.http.clone();
        let url = url.clone();
        let auth = payer.close(&challenge, channel, spent);
        tokio::spawn(async move { http.post(&url).header("authorization", auth).send().await })
    };
    let id = format!("{:#x}", channel.id);
    wait_for("the close to be recorded before broadcast", async || {
        ledger
            .channel(&id)
            .await
            .unwrap()
            .unwrap()
            .inflight
            .is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let it reach the node
    leader.kill().await;
    let _ = closing.await;
    let _: Value = rpc.call("evm_setAutomine", json!([true])).await.unwrap();
    let _: Value = rpc.call("evm_mine", json!([])).await.unwrap();

    // The follower becomes the leader and reconciles what was in flight.
    wait_for("the follower to finish the settlement", async || {
        let c = ledger.channel(&id).await.unwrap().unwrap();
        c.inflight.is_none() && c.status == ChannelStatus::Finalized
    })
    .await;
    let stored = ledger.channel(&id).await.unwrap().unwrap();
    assert_eq!(stored.settled, spent);
    assert_eq!(
        h.balance(payee).await - payee_before,
        spent,
        "the payee gained exactly what was spent, once"
    );
    assert!(leader_lock_held(&pg).await, "the follower leads now");
    follower.kill().await;
    drop(ledger);
}

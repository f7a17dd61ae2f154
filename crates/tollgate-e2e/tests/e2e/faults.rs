//! The fault matrix (issue 12): every way a loopback upstream can fail or
//! misbehave, against every payment kind — charge settled before the
//! upstream, charge settled after it, session (plain and streamed) and the
//! plan endpoint. For each pair: the status the client sees, no receipt on
//! a failure, and the exact amount the payer lost, on chain (what the
//! charge transferred minus what was refunded) or in the channel's `spent`,
//! equal to the documented rule:
//!
//! - a failed call costs nothing (a charge is refunded in full);
//! - a whole answer costs its reported usage (session, plan), else what it
//!   delivered counted by the tokenizer; a charge pays its quote;
//! - an answer that broke off costs what it delivered: the prompt as quoted
//!   plus the output counted by the tokenizer (nothing when no output);
//!   a charge is refunded the rest of its quote.
//!
//! The four kinds run side by side on one chain, each with its own
//! upstream, gateway and database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::{Duration, Instant};

use common::faults::{FaultUpstream, Mode, PROMPT_TOKENS, StreamSpec, Writes};
use common::session::{Channel, session_challenge};
use common::*;
use serde_json::{Value, json};
use tollgate_devnet::{DEV_ACCOUNTS, PATH_USD};
use tollgate_ledger::{ChannelBook, Ledger, RefundBook, RefundState};
use tollgate_mock::MockOptions;
use tollgate_pricing::{Endpoint, PriceTable, Quote, UsageDetail, actual_cost_detail};

const MODEL: &str = "gpt-4o-mini";
const MAX_TOKENS: u64 = 200;
/// Content events in a fault stream.
const WORDS: usize = 12;
/// Where a broken stream breaks.
const BREAK_AT: usize = 5;
const DEPOSIT: u128 = 5_000_000;
const BUCKET: u128 = 1_000_000;
/// The answer of a whole JSON body (`Mode::JsonWithoutUsage`).
const BODY_TEXT: &str = "one two three four five";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ChargeBefore,
    ChargeAfter,
    Session,
    Plan,
}

impl Kind {
    fn is_charge(self) -> bool {
        matches!(self, Self::ChargeBefore | Self::ChargeAfter)
    }
}

/// What reached the client.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// An error answer: this status, and the gateway's problem `code`
    /// (`None`: the upstream's own error body, passed on).
    Error(u16, Option<&'static str>),
    /// A `200` whose body is whole: the upstream reported usage for
    /// `Some(output tokens)`, else none.
    Whole(Option<u64>),
    /// A stream that broke off after this many content events.
    Broken(usize),
}

struct Case {
    name: &'static str,
    mode: Mode,
    stream: bool,
    seen: Seen,
}

fn stream(spec: StreamSpec) -> Mode {
    Mode::Stream(spec)
}

fn cases() -> Vec<Case> {
    let words = StreamSpec::words(WORDS);
    let mut all = Vec::new();
    for stream in [false, true] {
        all.push(Case {
            name: "500",
            mode: Mode::Status(500),
            stream,
            seen: Seen::Error(500, None),
        });
        all.push(Case {
            name: "429",
            mode: Mode::Status(429),
            stream,
            seen: Seen::Error(429, None),
        });
        all.push(Case {
            name: "timeout (no answer)",
            mode: Mode::Timeout,
            stream,
            seen: Seen::Error(504, Some("upstream-timeout")),
        });
    }
    all.extend([
        Case {
            name: "body cut",
            mode: Mode::BodyCut,
            stream: false,
            seen: Seen::Error(502, Some("upstream-response-incomplete")),
        },
        Case {
            name: "body stall",
            mode: Mode::BodyStall,
            stream: false,
            seen: Seen::Error(504, Some("upstream-stalled")),
        },
        Case {
            name: "hang after headers",
            mode: Mode::HangAfterHeaders,
            stream: false,
            seen: Seen::Error(504, Some("upstream-stalled")),
        },
        Case {
            name: "malformed JSON",
            mode: Mode::MalformedJson,
            stream: false,
            seen: Seen::Error(502, Some("upstream-response-malformed")),
        },
        Case {
            name: "200 without usage",
            mode: Mode::JsonWithoutUsage,
            stream: false,
            seen: Seen::Whole(None),
        },
        Case {
            name: "stream cut",
            mode: stream(StreamSpec {
                cut_after: Some(BREAK_AT),
                ..words.clone()
            }),
            stream: true,
            seen: Seen::Broken(BREAK_AT),
        },
        Case {
            name: "stream cut before any content",
            mode: stream(StreamSpec {
                cut_after: Some(0),
                ..words.clone()
            }),
            stream: true,
            seen: Seen::Broken(0),
        },
        Case {
            name: "stream stalled",
            mode: stream(StreamSpec {
                stall_after: Some(BREAK_AT),
                ..words.clone()
            }),
            stream: true,
            seen: Seen::Broken(BREAK_AT),
        },
        Case {
            name: "stream without usage",
            mode: stream(StreamSpec {
                usage: false,
                ..words.clone()
            }),
            stream: true,
            seen: Seen::Whole(None),
        },
        Case {
            name: "usage event split",
            mode: stream(StreamSpec {
                writes: Writes::Split,
                ..words.clone()
            }),
            stream: true,
            seen: Seen::Whole(Some(WORDS as u64)),
        },
        Case {
            name: "usage event coalesced",
            mode: stream(StreamSpec {
                writes: Writes::Coalesced,
                ..words
            }),
            stream: true,
            seen: Seen::Whole(Some(WORDS as u64)),
        },
    ]);
    all
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Explain payment channels in one line."}])
}

/// What the client sends: a chat on a route, or a turn on the plan endpoint.
fn body(kind: Kind, stream: bool) -> String {
    let mut body = json!({
        "model": MODEL,
        "messages": messages(),
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    });
    if kind == Kind::Plan {
        body["plan"] = json!("Plus");
        body["model_optimization"] = json!(false);
    }
    body.to_string()
}

/// The pricing rule, from the shipped table, independent of the gateway.
struct Prices {
    table: PriceTable,
}

impl Prices {
    /// The quote of a route body (the plan prices a turn the same way: the
    /// model, messages, output cap and stream flag it sends upstream).
    fn quote(&self, stream: bool) -> Quote {
        let json: Value = serde_json::from_str(&body(Kind::Session, stream)).unwrap();
        Endpoint::Chat.quote(&self.table, &json).unwrap()
    }

    fn cost(&self, stream: bool, input_tokens: u64, output_tokens: u64) -> u128 {
        actual_cost_detail(
            &self.table,
            Endpoint::Chat,
            &self.quote(stream),
            Some(UsageDetail {
                input_tokens,
                output_tokens,
                ..UsageDetail::default()
            }),
        )
    }

    fn tokens(&self, text: &str) -> u64 {
        let (_, price) = self.table.chat_model(MODEL).unwrap();
        price.encoding.count(text).max(1)
    }

    /// Output tokens of the first `n` content events, counted one by one.
    fn stream_tokens(&self, n: usize) -> u64 {
        (0..n)
            .map(|i| self.tokens(&format!("{}word{i}", if i == 0 { "" } else { " " })))
            .sum()
    }

    /// What the payer loses for `case` under `kind`, by the rule.
    fn lost(&self, kind: Kind, case: &Case) -> u128 {
        let counted =
            |output: u64| self.cost(case.stream, self.quote(case.stream).input_units, output);
        match case.seen {
            Seen::Error(..) => 0,
            Seen::Whole(_) if kind.is_charge() => self.quote(case.stream).amount,
            Seen::Whole(Some(reported)) => self.cost(case.stream, PROMPT_TOKENS, reported),
            Seen::Whole(None) if case.stream => counted(self.stream_tokens(WORDS)),
            Seen::Whole(None) => counted(self.tokens(BODY_TEXT)),
            Seen::Broken(0) => 0,
            Seen::Broken(n) => counted(self.stream_tokens(n)),
        }
    }
}

/// What a case cost on chain: the charge's transfer and its refund.
#[derive(Debug, Default, Clone, Copy)]
struct OnChain {
    charged: u128,
    refunded: u128,
}

/// Sum of the pathUSD `Transfer` events from `from` to `to` in `tx`.
async fn transferred(h: &Harness, tx: &str, from: &str, to: &str) -> u128 {
    let receipt: Value = h
        .devnet
        .rpc()
        .call("eth_getTransactionReceipt", json!([tx]))
        .await
        .unwrap();
    assert_eq!(receipt["status"], "0x1", "{tx} succeeded");
    let transfer = format!(
        "{:#x}",
        alloy::primitives::keccak256("Transfer(address,address,uint256)")
    );
    let word = |a: &str| format!("0x{:0>64}", a.trim_start_matches("0x").to_ascii_lowercase());
    receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|log| {
            log["address"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(PATH_USD)
                && log["topics"][0] == transfer.as_str()
                && log["topics"][1] == word(from).as_str()
                && log["topics"][2] == word(to).as_str()
        })
        .map(|log| {
            u128::from_str_radix(log["data"].as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap()
        })
        .sum()
}

/// The words a client reads from an OpenAI-format stream, whether it ended
/// with `[DONE]`, and whether it carried a `payment-receipt` event.
fn read_stream(text: &str) -> (String, bool, bool) {
    let mut content = String::new();
    let (mut done, mut receipt_event) = (false, false);
    for event in text.split("\n\n") {
        receipt_event |= event.lines().any(|l| l == "event: payment-receipt");
        for line in event.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(part) = chunk["choices"][0]["delta"]["content"].as_str() {
                content.push_str(part);
            }
        }
    }
    (content, done, receipt_event)
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One payment kind's gateway, upstream and (for sessions) channel.
struct Bench<'h> {
    h: &'h Harness,
    kind: Kind,
    upstream: FaultUpstream,
    options: Options,
    url: String,
    channel: Option<Channel>,
    gateway: Gateway,
}

impl<'h> Bench<'h> {
    async fn start(h: &'h Harness, kind: Kind) -> Self {
        let upstream = FaultUpstream::start(Mode::Json).await;
        let options = Options {
            quoted: true,
            session: true,
            settle_after_upstream: kind == Kind::ChargeAfter,
            session_extra: "stream_voucher_timeout_secs = 5\n".into(),
            upstream_url: Some(upstream.url.clone()),
            upstream_idle_secs: Some(1),
            db_path: Some(h.dir.path().join(format!("{kind:?}.db"))),
            plans: (kind == Kind::Plan).then(|| {
                format!(
                    "[plans]\nvoucher_bucket = {BUCKET}\nsuggested_deposit = {DEPOSIT}\nstreaming = true\n\n\
                     [plans.models.\"{MODEL}\"]\nupstream = \"openai\"\n\n\
                     [plans.plans.Plus]\nmodels = [\"{MODEL}\"]\nmax_input_tokens = 4000\nmax_output_tokens = 512\n"
                )
            }),
            ..Options::default()
        };
        let gateway = h.gateway(&options).await;
        let path = if kind == Kind::Plan {
            "/v1/mpp/chat/completions"
        } else {
            "/v1/chat/completions"
        };
        let url = format!("{}{path}", gateway.url);
        let mut bench = Self {
            h,
            kind,
            upstream,
            options,
            url,
            channel: None,
            gateway,
        };
        if matches!(kind, Kind::Session | Kind::Plan) {
            bench.open().await;
        }
        bench
    }

    /// Opens the channel with a first, whole plain request.
    async fn open(&mut self) {
        let body = body(self.kind, false);
        let challenge = session_challenge(&challenges(
            &post(&self.h.http, &self.url, &body, None).await,
        ));
        let initial = if self.kind == Kind::Plan {
            BUCKET
        } else {
            DEPOSIT
        };
        let (channel, auth) = self.h.payer().open(&challenge, DEPOSIT, initial).await;
        let response = post(&self.h.http, &self.url, &body, Some(&auth)).await;
        assert_eq!(response.status(), 200, "{:?}: the channel opens", self.kind);
        let _ = response.bytes().await.unwrap();
        self.channel = Some(channel);
    }

    async fn spent(&self) -> u128 {
        self.h
            .stored_channel(&self.options, self.channel.unwrap())
            .await
            .spent
    }

    /// Runs one case; returns what it cost on chain (charges).
    async fn run(&self, case: &Case, prices: &Prices) -> OnChain {
        let what = format!(
            "{:?} / {} ({})",
            self.kind,
            case.name,
            if case.stream { "stream" } else { "plain" }
        );
        self.upstream.set(case.mode.clone());
        let body = body(self.kind, case.stream);
        let offered = challenges(&post(&self.h.http, &self.url, &body, None).await);
        let (auth, challenge_id) = if self.kind.is_charge() {
            let charge = offered
                .iter()
                .find(|c| c.intent.as_str() == "charge")
                .unwrap()
                .clone();
            (
                pay(&charge, signer(PAYER), &self.h.devnet.rpc_url()).await,
                charge.id,
            )
        } else {
            let challenge = session_challenge(&offered);
            let cumulative = if self.kind == Kind::Plan {
                BUCKET
            } else {
                DEPOSIT
            };
            (
                self.h
                    .payer()
                    .pay_voucher(&challenge, self.channel.unwrap(), cumulative),
                challenge.id,
            )
        };
        let spent_before = if self.channel.is_some() {
            self.spent().await
        } else {
            0
        };

        let response = post(&self.h.http, &self.url, &body, Some(&auth)).await;
        let status = response.status().as_u16();
        let receipt_header = response.headers().get("payment-receipt").is_some();
        match case.seen {
            Seen::Error(expected, code) => {
                assert_eq!(status, expected, "{what}: status");
                assert!(!receipt_header, "{what}: no receipt on a failure");
                if expected == 429 {
                    assert_eq!(response.headers()["retry-after"], "7", "{what}");
                }
                let problem: Value = response.json().await.unwrap();
                if let Some(code) = code {
                    assert_eq!(problem["code"], code, "{what}: {problem}");
                }
            }
            Seen::Whole(_) | Seen::Broken(_) => {
                assert_eq!(status, 200, "{what}: status");
                // A plan stream's receipt is its last event, once committed.
                let streamed_plan = self.kind == Kind::Plan && case.stream;
                assert_eq!(receipt_header, !streamed_plan, "{what}: receipt header");
                let text = response.text().await.unwrap();
                if case.stream {
                    let (content, done, receipt_event) = read_stream(&text);
                    let (delivered, whole) = match case.seen {
                        Seen::Broken(n) => (n, false),
                        _ => (WORDS, true),
                    };
                    assert_eq!(content, words(delivered), "{what}: {text}");
                    assert_eq!(done, whole, "{what}: [DONE] only ends a whole stream");
                    assert_eq!(
                        receipt_event,
                        !self.kind.is_charge(),
                        "{what}: sessions end with their receipt event"
                    );
                } else {
                    let answer: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(answer["choices"][0]["message"]["content"], BODY_TEXT);
                }
            }
        }

        let expected = prices.lost(self.kind, case);
        if !self.kind.is_charge() {
            let lost = self.spent().await - spent_before;
            assert_eq!(lost, expected, "{what}: spent");
            let ledger = self.h.ledger(&self.options);
            let id = format!("{:#x}", self.channel.unwrap().id);
            wait_until(&what, || async {
                ledger.channel(&id).await.unwrap().unwrap().reserved == 0
            })
            .await;
            return OnChain::default();
        }
        let ledger = self.h.ledger(&self.options);
        let payer = DEV_ACCOUNTS[PAYER].address;
        let recipient = DEV_ACCOUNTS[RECIPIENT].address;
        let charge = ledger
            .recent_charges(1_000)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.challenge_id == challenge_id);
        let charged = match &charge {
            Some(c) => transferred(self.h, &c.reference, payer, recipient).await,
            None => 0,
        };
        let refund_due = charged - expected.min(charged);
        let refunded = if refund_due > 0 {
            let refund = self.h.refunded(&self.options, &challenge_id).await;
            assert_eq!(refund.amount, refund_due, "{what}: refund");
            transferred(self.h, refund.tx_hash.as_deref().unwrap(), recipient, payer).await
        } else {
            0
        };
        assert_eq!(
            charged - refunded,
            expected,
            "{what}: lost on chain (charged {charged}, refunded {refunded})"
        );
        if matches!(case.seen, Seen::Error(..)) && self.kind == Kind::ChargeAfter {
            assert_eq!(charged, 0, "{what}: nothing broadcast");
        }
        OnChain { charged, refunded }
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the hold was released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs every case on one kind; returns the charges' on-chain totals.
async fn run_kind(h: &Harness, kind: Kind, prices: &Prices) -> OnChain {
    let bench = Bench::start(h, kind).await;
    let mut total = OnChain::default();
    let mut refunds_due = 0;
    for case in cases() {
        let cost = bench.run(&case, prices).await;
        total.charged += cost.charged;
        total.refunded += cost.refunded;
        refunds_due += usize::from(cost.refunded > 0);
    }
    if kind.is_charge() {
        // No refund beyond the ones the rule asks for, and each confirmed.
        let ledger = h.ledger(&bench.options);
        let refunds = ledger.recent_refunds(1_000).await.unwrap();
        assert_eq!(refunds.len(), refunds_due, "{kind:?}: {refunds:?}");
        assert!(refunds.iter().all(|r| r.state == RefundState::Refunded));
        assert_eq!(
            refunds.iter().map(|r| r.amount).sum::<u128>(),
            total.refunded,
            "{kind:?}: refunds in the ledger = refunds on chain"
        );
    }
    bench.gateway.stop().await;
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_costs_the_payer_exactly_what_the_rule_says() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let prices = Prices {
        table: PriceTable::builtin(),
    };
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let recipient_before = h.balance(recipient).await;
    let (before, after, session, plan) = tokio::join!(
        run_kind(&h, Kind::ChargeBefore, &prices),
        run_kind(&h, Kind::ChargeAfter, &prices),
        run_kind(&h, Kind::Session, &prices),
        run_kind(&h, Kind::Plan, &prices),
    );
    assert_eq!((session.charged, plan.charged), (0, 0));
    assert!(before.refunded > 0 && after.refunded > 0);
    // Nothing else moved the recipient's pathUSD: its gain is the charges
    // minus the refunds, to the base unit.
    assert_eq!(
        h.balance(recipient).await - recipient_before,
        before.charged + after.charged - before.refunded - after.refunded
    );
}

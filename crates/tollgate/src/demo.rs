//! `tollgate demo`: everything working in one command. It starts a local
//! Tempo chain with the session escrow, runs the gateway in process (SQLite
//! store, mock upstream), and narrates a walkthrough with the paying
//! library `tollgate_client`: an unpaid request and its decoded 402, a
//! charge, a session (three metered requests, one streamed, then a close),
//! and balances that add up. Then it keeps serving until Ctrl-C, or exits
//! with `--no-serve`.
//!
//! The payer is dev account #0, the recipient dev account #1. Both pay
//! network fees in alphaUSD, so pathUSD moves only for payments and the
//! final equation is exact.

mod narrator;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_client::{
    Client, Config as ClientConfig, Event, IntentChoice, OfferKind, Payment, PrivateKeySigner,
    Request, Url,
};
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS, Devnet, DevnetOptions, PATH_USD};
use tollgate_server::config::UpstreamConfig;

use crate::devnet_config;
use narrator::{Narrator, amount, flush, short, usd};

const PAYER: usize = 0;
const RECIPIENT: usize = devnet_config::RECIPIENT_INDEX;
const CHAT_PATH: &str = "/v1/chat/completions";
const STEPS: usize = 6;
/// The mock upstream's pace when streaming, so the text visibly flows.
const STREAM_PACE: Duration = Duration::from_millis(40);
/// The streamed request authorizes this much beyond what was spent (the
/// price table's minimum charge), so the gateway has to ask for a voucher
/// mid-stream.
const STREAM_AUTHORIZE: u128 = 100;
/// The payer's spend policy: at most this per request (1 USD).
const MAX_AMOUNT: u128 = 1_000_000;

/// Quieter logs than the other commands (the walkthrough is the output):
/// `RUST_LOG` still applies.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub async fn run(no_serve: bool, dir: &Path) -> anyhow::Result<()> {
    let out = Narrator::new(STEPS);
    out.title("Tollgate demo: a paid AI gateway on a local Tempo chain");
    let mut devnet = out
        .step("Start a local Tempo chain", start_chain(&out))
        .await?;
    let mut gateway = out
        .step("Start the gateway", start_gateway(&out, &devnet, dir))
        .await?;
    let tour = Tour::new(&out, &devnet, &gateway, dir)?;
    out.step("Ask without paying: 402 Payment Required", tour.unpaid())
        .await?;
    let (start, charged) = out.step("Pay once with a charge", tour.charge()).await?;
    let session = out
        .step("Pay as you go with a session", tour.session())
        .await?;
    out.step(
        "Check that the balances add up",
        tour.totals(start, charged, session),
    )
    .await?;
    println!();
    println!("✓ Every step succeeded.");
    if no_serve {
        gateway.stop().await?;
        devnet.stop().await;
        return Ok(());
    }
    try_it(&gateway.base, &devnet.rpc_url());
    flush();
    let outcome = tokio::select! {
        _ = crate::signals::terminated() => Ok(()),
        status = devnet.wait() => Err(anyhow::anyhow!("the chain stopped: {status:?}")),
        served = &mut gateway.task => Err(anyhow::anyhow!("the gateway stopped: {served:?}")),
    };
    gateway.stop().await?;
    devnet.stop().await;
    outcome
}

async fn start_chain(out: &Narrator) -> anyhow::Result<Devnet> {
    out.say("anvil --network tempo (installed with solc into the cache on first use,");
    out.say("which can take a minute), then the TIP-20 channel reserve is installed…");
    flush();
    let devnet = Devnet::start(DevnetOptions {
        escrow: false,
        channel_reserve: true,
        ..DevnetOptions::default()
    })
    .await
    .context("starting the local chain")?;
    let reserve = devnet
        .channel_reserve()
        .context("the channel reserve was not installed")?;
    out.ok(format!(
        "chain {} running at {}",
        devnet.chain_id(),
        devnet.rpc_url()
    ));
    out.ok(format!(
        "channel reserve (TIP-1034, session protocol v2) at {}",
        short(reserve)
    ));
    out.field("token", format!("pathUSD {} (6 decimals)", short(PATH_USD)));
    out.field("payer", format!("dev account #0 {}", short(payer())));
    out.field(
        "recipient",
        format!("dev account #1 {}", short(recipient())),
    );
    out.say("Dev accounts start with the largest balance a TIP-20 token holds, 2^64 − 1 base");
    out.say("units (about 18.4 trillion tokens): test money. The balances below look huge;");
    out.say("only how they change matters.");
    Ok(devnet)
}

/// The gateway, served in process.
struct Gateway {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            if !self.task.is_finished() {
                (&mut self.task).await??;
            }
        }
        Ok(())
    }
}

async fn start_gateway(out: &Narrator, devnet: &Devnet, dir: &Path) -> anyhow::Result<Gateway> {
    forget_previous_run(dir)?;
    let path = devnet_config::write(devnet, &dir.join("tollgate.toml"))?;
    let mut config = tollgate_server::Config::load(&path)
        .with_context(|| format!("loading {}", path.display()))?;
    for upstream in config.upstreams.values_mut() {
        if let UpstreamConfig::Mock { chunk_interval, .. } = upstream {
            *chunk_interval = STREAM_PACE;
        }
    }
    // The gateway's own transactions (the close) pay fees in alphaUSD.
    if let Some(session) = config.session.as_mut() {
        session.fee_token = Some(ALPHA_USD.parse()?);
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    let address = listener.local_addr()?;
    let router = tollgate_server::build_with(&config, crate::gateway_options())
        .await
        .context("building the gateway")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tollgate_server::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let base = format!("http://{address}");
    out.ok(format!("gateway listening on {base}"));
    out.field("config", path.display().to_string());
    out.field("store", config.store.describe());
    out.field(
        "upstream",
        "the built-in mock (OpenAI wire format, no API key needed)",
    );
    out.field(
        "paid routes",
        format!("{} (charge or session)", config.routes.len()),
    );
    Ok(Gateway {
        base,
        stop: Some(stop),
        task,
    })
}

/// Each run is on a new chain: stale stores and channel state would point
/// at channels that no longer exist.
fn forget_previous_run(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in ["tollgate.db", "pay.db"] {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = dir.join(format!("{name}{suffix}"));
            if file.exists() {
                std::fs::remove_file(&file)
                    .with_context(|| format!("removing {}", file.display()))?;
            }
        }
    }
    Ok(())
}

fn payer() -> &'static str {
    DEV_ACCOUNTS[PAYER].address
}

fn recipient() -> &'static str {
    DEV_ACCOUNTS[RECIPIENT].address
}

/// A small chat request: 20 tokens at most, which the mock fills, so the
/// worst case quoted is what it costs.
fn question() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "What does HTTP 402 mean?"}],
        "max_tokens": 20,
    })
    .to_string()
}

/// A streamed request to a larger model: it costs more than the streaming
/// client authorizes up front.
fn streamed_question() -> String {
    json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels."}],
        "max_tokens": 100,
        "stream": true,
    })
    .to_string()
}

/// pathUSD (payments) and alphaUSD (fees) of the payer and the recipient.
#[derive(Debug, Clone, Copy)]
struct Balances {
    payer: u128,
    recipient: u128,
    payer_fees: u128,
    recipient_fees: u128,
}

/// What the client reported, kept for the narration.
type Events = Arc<Mutex<Vec<Event>>>;

fn take(events: &Events) -> Vec<Event> {
    std::mem::take(&mut *events.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The walkthrough against the running chain and gateway.
struct Tour<'a> {
    out: &'a Narrator,
    devnet: &'a Devnet,
    url: Url,
    state: PathBuf,
}

/// What the session step paid.
struct SessionOutcome {
    spent: u128,
}

/// The session so far: the channel's deposit and what was spent.
#[derive(Debug, Clone, Copy, Default)]
struct Channel {
    deposit: u128,
    spent: u128,
}

impl<'a> Tour<'a> {
    fn new(
        out: &'a Narrator,
        devnet: &'a Devnet,
        gateway: &Gateway,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            out,
            devnet,
            url: format!("{}{CHAT_PATH}", gateway.base).parse()?,
            state: dir.join("pay.db"),
        })
    }

    fn request(&self, body: String) -> Request {
        Request::post(self.url.clone()).json(body)
    }

    fn client(&self, mut config: ClientConfig) -> anyhow::Result<(Client, Events)> {
        let events: Events = Arc::default();
        let sink = events.clone();
        config.observer = Some(Arc::new(move |e: Event| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        }));
        config.state_path = self.state.clone();
        Ok((Client::new(config)?, events))
    }

    /// The payer's client: dev key #0, fees in alphaUSD, a spend policy.
    fn paying_client(
        &self,
        intent: IntentChoice,
        authorize: Option<u128>,
    ) -> anyhow::Result<(Client, Events)> {
        let key: PrivateKeySigner = DEV_ACCOUNTS[PAYER].private_key.parse()?;
        let mut config = ClientConfig::new(key);
        config.rpc_url = Some(self.devnet.rpc_url());
        config.intent = intent;
        config.fee_token = Some(ALPHA_USD.parse()?);
        config.policy.max_amount = Some(MAX_AMOUNT);
        config.policy.allow_recipients = vec![recipient().parse()?];
        config.policy.chain_id = Some(self.devnet.chain_id());
        config.policy.authorize = authorize;
        self.client(config)
    }

    async fn balances(&self) -> anyhow::Result<Balances> {
        let rpc = self.devnet.rpc();
        let read = async |token: &str, holder: &str| {
            rpc.token_balance(token, holder)
                .await
                .with_context(|| format!("reading the balance of {}", short(holder)))
        };
        Ok(Balances {
            payer: read(PATH_USD, payer()).await?,
            recipient: read(PATH_USD, recipient()).await?,
            payer_fees: read(ALPHA_USD, payer()).await?,
            recipient_fees: read(ALPHA_USD, recipient()).await?,
        })
    }

    fn show_balances(&self, before: Balances, after: Balances) {
        self.out.field(
            "payer #0",
            balance_change(before.payer, after.payer, "pathUSD"),
        );
        self.out.field(
            "recipient #1",
            balance_change(before.recipient, after.recipient, "pathUSD"),
        );
    }

    /// Step: a request without payment, and its decoded offers.
    async fn unpaid(&self) -> anyhow::Result<()> {
        let (client, events) = self.client(ClientConfig::unsigned())?;
        self.out.say(format!("→ POST {CHAT_PATH} with no payment"));
        self.out.field("body", question());
        if let Ok(response) = client.send(self.request(question())).await {
            bail!("expected 402 Payment Required, got {}", response.status);
        }
        let challenges: Vec<_> = take(&events)
            .into_iter()
            .filter_map(|e| match e {
                Event::Challenge(c) => Some(c),
                _ => None,
            })
            .collect();
        ensure!(
            !challenges.is_empty(),
            "the gateway answered without a payment challenge"
        );
        self.out.say(format!(
            "← 402 Payment Required with {} offers, one `WWW-Authenticate: Payment …` each.",
            challenges.len()
        ));
        self.out.say(
            "  Parsed with mpp::parse_www_authenticate; each `request` parameter is base64url JSON:",
        );
        let mut intents = Vec::new();
        for (i, challenge) in challenges.iter().enumerate() {
            let offer = tollgate_client::challenge::decode(challenge)
                .with_context(|| format!("decoding offer {}", i + 1))?;
            let intent = challenge.intent.to_string();
            self.out.say(format!(
                "  offer {} · {}/{}",
                i + 1,
                challenge.method,
                intent
            ));
            self.out.field("intent", intent_meaning(&intent));
            match &offer.kind {
                OfferKind::Charge(c) => {
                    self.out.field("amount", amount(c.amount));
                }
                OfferKind::Session(s) => {
                    self.out
                        .field("amount", format!("{} (worst case)", amount(s.amount)));
                    let contract = if s.v2 { "reserve (v2)" } else { "escrow (v1)" };
                    self.out.field(contract, short(&format!("{:#x}", s.escrow)));
                    if let Some(deposit) = s.suggested_deposit {
                        self.out.field("suggested deposit", amount(deposit));
                    }
                }
            }
            self.out.field(
                "currency",
                format!("{} (pathUSD)", short(&format!("{:#x}", offer.currency()))),
            );
            self.out.field(
                "recipient",
                format!(
                    "{} (dev account #1)",
                    short(&format!("{:#x}", offer.recipient()))
                ),
            );
            self.out.field("chain id", offer.chain_id().to_string());
            self.out.field(
                "expires",
                challenge.expires.as_deref().unwrap_or("(no expiry)"),
            );
            intents.push(intent);
        }
        for wanted in ["charge", "session"] {
            ensure!(
                intents.iter().any(|i| i == wanted),
                "the gateway offers no {wanted}"
            );
        }
        self.out
            .ok("challenge decoded: nothing was paid, nothing was served");
        Ok(())
    }

    /// Step: pay one request with a charge; returns the balances before
    /// and the amount paid.
    async fn charge(&self) -> anyhow::Result<(Balances, u128)> {
        let before = self.balances().await?;
        self.out
            .say("The client (tollgate_client) reads the 402, checks the charge offer against its");
        self.out.say(
            "spend policy (≤ 1 USD, recipient #1 only), signs a pathUSD transfer and retries;",
        );
        self.out
            .say("the gateway broadcasts the transfer, then serves the answer.");
        let (client, _events) = self.paying_client(IntentChoice::Charge, None)?;
        let paid = client
            .send(self.request(question()))
            .await
            .context("paying with a charge")?;
        ensure!(
            paid.status.is_success(),
            "the paid request answered {}",
            paid.status
        );
        let Some(Payment::Charge {
            amount: price,
            mode,
            ..
        }) = paid.paid.clone()
        else {
            bail!("the request was not paid with a charge");
        };
        let receipt = paid
            .receipt
            .clone()
            .context("the answer carries no Payment-Receipt")?;
        let answer = reply_text(&paid.body.bytes().await?)?;
        self.out.ok(format!(
            "200 OK, paid {} by charge ({} mode)",
            amount(price),
            format!("{mode:?}").to_lowercase()
        ));
        self.out.field("answer", format!("\"{answer}\""));
        self.out.receipt("charge receipt", receipt.json());
        let after = self.balances().await?;
        self.out.say("Balances before → after:");
        self.show_balances(before, after);
        ensure!(
            before.payer.checked_sub(after.payer) == Some(price)
                && after.recipient.checked_sub(before.recipient) == Some(price),
            "the balances did not move by exactly the charge"
        );
        self.out
            .ok("the payer paid exactly the charge; the recipient got it");
        Ok((before, price))
    }

    /// Step: open a channel, three metered requests (the last streamed),
    /// then close it.
    async fn session(&self) -> anyhow::Result<SessionOutcome> {
        let (client, _events) = self.paying_client(IntentChoice::Session, None)?;
        self.out
            .say("A session is a channel on the TIP-20 channel reserve (protocol v2): one");
        self.out.say("deposit on chain, then off-chain");
        self.out
            .say("vouchers for a growing cumulative amount, settled once at the close.");
        let channel = self.metered(&client, 1, Channel::default()).await?;
        let channel = self.metered(&client, 2, channel).await?;
        let (stream_client, stream_events) =
            self.paying_client(IntentChoice::Session, Some(STREAM_AUTHORIZE))?;
        let channel = self
            .streamed(&stream_client, &stream_events, channel)
            .await?;
        self.close(&client, channel).await?;
        Ok(SessionOutcome {
            spent: channel.spent,
        })
    }

    /// One plain session request; returns the channel after it.
    async fn metered(&self, client: &Client, n: usize, before: Channel) -> anyhow::Result<Channel> {
        println!();
        self.out.say(format!("Request {n} of 3 (session)"));
        let paid = client
            .send(self.request(question()))
            .await
            .with_context(|| format!("session request {n}"))?;
        ensure!(
            paid.status.is_success(),
            "session request {n} answered {}",
            paid.status
        );
        let deposit = match &paid.paid {
            Some(Payment::Session {
                channel_id,
                opened: true,
                cumulative,
                deposit,
                ..
            }) => {
                self.out.ok(format!(
                    "session opened: channel {} (v2, deposit held by the channel reserve)",
                    short(&format!("{channel_id:#x}"))
                ));
                self.out.field("deposit", amount(*deposit));
                self.out.field("first voucher", amount(*cumulative));
                *deposit
            }
            Some(Payment::Session {
                channel_id,
                cumulative,
                deposit,
                ..
            }) => {
                self.out.ok(format!(
                    "same channel {}: a signed voucher, no transaction",
                    short(&format!("{channel_id:#x}"))
                ));
                self.out.field("voucher", amount(*cumulative));
                *deposit
            }
            _ => bail!("session request {n} was not paid with a session"),
        };
        let receipt = paid
            .receipt
            .clone()
            .context("the answer carries no Payment-Receipt")?;
        let spent = receipt.spent().context("the receipt has no spent")?;
        let answer = reply_text(&paid.body.bytes().await?)?;
        self.out.field("answer", format!("\"{answer}\""));
        self.out.receipt("session receipt", receipt.json());
        self.out.field(
            "this request cost",
            amount(spent.saturating_sub(before.spent)),
        );
        Ok(Channel { deposit, spent })
    }

    /// The streamed request, shown as it arrives.
    async fn streamed(
        &self,
        client: &Client,
        events: &Events,
        before: Channel,
    ) -> anyhow::Result<Channel> {
        println!();
        self.out.say("Request 3 of 3 (session, streamed, gpt-4o)");
        self.out.say(format!(
            "This client authorizes only {STREAM_AUTHORIZE} base units beyond what was spent"
        ));
        self.out.say(format!(
            "(like `tollgate pay --authorize {STREAM_AUTHORIZE}`): when the text outruns it, the gateway"
        ));
        self.out
            .say("pauses the stream with `payment-need-voucher` and the client sends a voucher.");
        let mut paid = client
            .send(self.request(streamed_question()))
            .await
            .context("the streamed session request")?;
        ensure!(
            paid.status.is_success(),
            "the streamed request answered {}",
            paid.status
        );
        if let Some(Payment::Session { cumulative, .. }) = &paid.paid {
            self.out.field("voucher up front", amount(*cumulative));
        }
        self.out.say("streamed text, as it arrives:");
        let mut printer = stream::Printer::default();
        let mut frames = stream::Frames::default();
        let mut warnings = Vec::new();
        let mut paused = 0;
        while let Some(chunk) = paid.body.chunk().await.context("reading the stream")? {
            for frame in frames.feed(&chunk) {
                match frame.event.as_deref() {
                    Some("payment-need-voucher") => {
                        paused += 1;
                        printer.note(&need_voucher_note(&frame.data));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(text) = stream::delta_text(&frame.data) {
                            printer.text(&text);
                        }
                    }
                }
            }
            self.narrate_stream_events(events, &mut printer, &mut warnings);
        }
        self.narrate_stream_events(events, &mut printer, &mut warnings);
        printer.end_line();
        ensure!(
            warnings.is_empty(),
            "the stream went wrong: {}",
            warnings.join("; ")
        );
        ensure!(
            !printer.text.trim().is_empty(),
            "the stream carried no text"
        );
        let receipt = paid
            .body
            .final_receipt()
            .context("the stream ended without its payment-receipt event")?;
        let spent = receipt.spent().context("the final receipt has no spent")?;
        self.out.ok(format!(
            "streamed {} words; paused for a voucher {paused} time(s)",
            printer.text.split_whitespace().count()
        ));
        self.out
            .receipt("final receipt (the stream's last event)", receipt.json());
        self.out.field(
            "this request cost",
            amount(spent.saturating_sub(before.spent)),
        );
        Ok(Channel { spent, ..before })
    }

    fn narrate_stream_events(
        &self,
        events: &Events,
        printer: &mut stream::Printer,
        warnings: &mut Vec<String>,
    ) {
        for event in take(events) {
            match event {
                Event::VoucherSent { cumulative, .. } => printer.note(&format!(
                    "▶ the client signed a voucher for cumulative {cumulative} ({} USD); the stream resumes",
                    usd(cumulative)
                )),
                Event::Warning(w) => {
                    printer.note(&format!("! {w}"));
                    warnings.push(w);
                }
                _ => {}
            }
        }
    }

    /// Closes the channel for exactly what was spent.
    async fn close(&self, client: &Client, channel: Channel) -> anyhow::Result<()> {
        println!();
        self.out
            .say("Close: a `close` voucher for exactly what was spent; the gateway");
        self.out
            .say("submits it to the reserve, which pays the recipient exactly that and refunds the rest.");
        let closed = client
            .close_session(self.url.clone())
            .await
            .context("closing the channel")?;
        let tx = closed
            .tx_hash
            .clone()
            .context("the close receipt carries no transaction hash")?;
        let onchain = self
            .devnet
            .rpc()
            .wait_receipt(&tx)
            .await
            .context("reading the settlement transaction")?;
        ensure!(
            onchain.get("status").and_then(Value::as_str) == Some("0x1"),
            "the settlement transaction {tx} failed on chain"
        );
        let block = onchain
            .get("blockNumber")
            .and_then(Value::as_str)
            .and_then(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .map_or_else(|| "?".to_owned(), |b| b.to_string());
        self.out.ok(format!(
            "channel closed; settlement transaction {} (block {block}, status success)",
            short(&tx)
        ));
        self.out.receipt("close receipt", closed.receipt.json());
        ensure!(
            closed.cumulative == channel.spent,
            "the close captured {} but {} was spent",
            closed.cumulative,
            channel.spent
        );
        self.out
            .field("to the recipient", amount(closed.cumulative));
        self.out.field(
            "back to the payer",
            format!(
                "{} (the rest of the deposit)",
                amount(channel.deposit - closed.cumulative)
            ),
        );
        Ok(())
    }

    /// Step: what moved, and the equation.
    async fn totals(
        &self,
        start: Balances,
        charge: u128,
        session: SessionOutcome,
    ) -> anyhow::Result<()> {
        let end = self.balances().await?;
        self.out.say("pathUSD, from before the charge to now:");
        self.show_balances(start, end);
        let paid_out = start.payer.checked_sub(end.payer);
        let received = end.recipient.checked_sub(start.recipient);
        let expected = charge + session.spent;
        self.out
            .say("payer's loss = recipient's gain = charge + session spent:");
        for (who, moved) in [("payer's loss", paid_out), ("recipient's gain", received)] {
            let moved = moved.map_or_else(|| "(negative)".to_owned(), |m| m.to_string());
            let holds = if moved == expected.to_string() {
                "✓ holds"
            } else {
                "✗ does not hold"
            };
            self.out.field(
                who,
                format!("{moved} = {charge} + {} → {holds}", session.spent),
            );
        }
        self.out.field(
            "in USD",
            format!(
                "{} = {} + {}",
                usd(expected),
                usd(charge),
                usd(session.spent)
            ),
        );
        self.out.say(format!(
            "Network fees were paid in alphaUSD: payer {} USD, gateway {} USD.",
            usd(start.payer_fees.saturating_sub(end.payer_fees)),
            usd(start.recipient_fees.saturating_sub(end.recipient_fees)),
        ));
        self.out
            .say("(Tempo has no native gas coin: each transaction pays its fee in a USD");
        self.out
            .say("stablecoin of the sender's choice. Here both sides pay in alphaUSD, a second");
        self.out
            .say("dev token, so pathUSD moves only by payments and the equation is exact.)");
        ensure!(
            paid_out == Some(expected) && received == Some(expected),
            "the balances do not add up"
        );
        self.out.ok("the balances add up");
        Ok(())
    }
}

fn intent_meaning(intent: &str) -> &'static str {
    match intent {
        "charge" => "charge: one TIP-20 transfer for this request",
        "session" => "session: a payment channel paid with cumulative vouchers",
        _ => "(unknown to this demo)",
    }
}

fn balance_change(before: u128, after: u128, token: &str) -> String {
    let delta = if after >= before {
        format!("+{}", after - before)
    } else {
        format!("−{}", before - after)
    };
    format!(
        "{} → {} {token} ({delta} base units)",
        usd(before),
        usd(after)
    )
}

fn need_voucher_note(data: &str) -> String {
    let need: Value = serde_json::from_str(data).unwrap_or_default();
    let field = |name: &str| {
        need.get(name)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u128>().ok())
            .map_or_else(|| "?".to_owned(), |u| format!("{u} ({} USD)", usd(u)))
    };
    format!(
        "⏸ payment-need-voucher: the gateway needs cumulative {}, has {}",
        field("requiredCumulative"),
        field("acceptedCumulative")
    )
}

/// The assistant's text in a chat completion.
fn reply_text(body: &[u8]) -> anyhow::Result<String> {
    let json: Value = serde_json::from_slice(body).context("the answer is not JSON")?;
    json.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("the answer has no choices[0].message.content")
}

/// Ready-to-paste commands against the running gateway.
fn try_it(base: &str, rpc_url: &str) {
    let key = DEV_ACCOUNTS[PAYER].private_key;
    let body = question();
    println!();
    println!("The gateway keeps serving at {base} (Ctrl-C stops it and the chain).");
    println!(
        "Try it yourself with dev account #0 (a public test key; never use it for real funds):"
    );
    println!();
    println!(
        "  TOLLGATE_PRIVATE_KEY={key} tollgate pay --rpc-url {rpc_url} -v --json '{body}' {base}{CHAT_PATH}"
    );
    println!();
    println!("Or let any OpenAI client pay through a local paying proxy:");
    println!();
    println!(
        "  TOLLGATE_PRIVATE_KEY={key} tollgate pay proxy --listen 127.0.0.1:8403 --target {base} --rpc-url {rpc_url}"
    );
    println!(
        "  curl http://127.0.0.1:8403{CHAT_PATH} -H 'content-type: application/json' -d '{body}'"
    );
    println!();
    println!("(From a checkout, `cargo run --release -p tollgate --` stands in for `tollgate`.)");
}

//! The request → 402 → pay → retry loop, streamed bodies with
//! `payment-need-voucher` answered in the background, and closing a
//! session channel.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mpp::PaymentChallenge;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url, Version};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::challenge::{self, IntentChoice, Offer, OfferKind, SessionOffer};
use crate::charge::{self, ChargeMode};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::receipt::{Receipt, SseParser};
use crate::rpc::Rpc;
use crate::state::{ChannelKey, ChannelRecord, ChannelStatus, State};
use crate::{reserve, session};

/// Receives what the client does, for progress output (`-v`). Events never
/// carry keys, signatures or credentials.
pub type Observer = Arc<dyn Fn(Event) + Send + Sync>;

/// Something the client did or saw.
#[derive(Debug, Clone)]
pub enum Event {
    /// An offer on a 402.
    Challenge(PaymentChallenge),
    /// The offer being paid.
    Selected(PaymentChallenge),
    /// A payment about to be sent.
    Paying(Payment),
    /// The `Payment-Receipt` of a response.
    Receipt(Receipt),
    /// A stream paused for a voucher.
    NeedVoucher {
        channel_id: String,
        required: u128,
        accepted: u128,
        deposit: u128,
    },
    /// A voucher sent on a body-less request (answering `NeedVoucher`).
    VoucherSent {
        cumulative: u128,
        receipt: Option<Receipt>,
    },
    /// The stream's final `payment-receipt` event.
    StreamReceipt(Receipt),
    /// Something went wrong in the background (a stream's voucher).
    Warning(String),
}

/// What was paid for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    Charge {
        challenge_id: String,
        amount: u128,
        currency: Address,
        recipient: Address,
        chain_id: u64,
        mode: ChargeMode,
        /// Set in push mode (the client broadcast the transfer).
        tx_hash: Option<String>,
        /// The server sponsors the fees.
        sponsored: bool,
    },
    Session {
        channel_id: B256,
        /// This request opened the channel.
        opened: bool,
        /// The cumulative amount the voucher authorizes.
        cumulative: u128,
        deposit: u128,
        /// A top-up sent before the voucher.
        top_up: Option<u128>,
    },
}

/// Client settings.
#[derive(Clone)]
pub struct Config {
    /// The payer's key. Without one, only requests that need no payment work.
    pub signer: Option<PrivateKeySigner>,
    /// Chain RPC, to sign (gas, chain id) and broadcast.
    pub rpc_url: Option<String>,
    pub policy: Policy,
    pub intent: IntentChoice,
    pub mode: ChargeMode,
    /// The session state file.
    pub state_path: PathBuf,
    /// Token paying the fees of the payer's own transactions (default: the
    /// payment's currency).
    pub fee_token: Option<Address>,
    pub observer: Option<Observer>,
    /// HTTP client to use (a default one otherwise).
    pub http: Option<reqwest::Client>,
}

impl Config {
    pub fn new(signer: PrivateKeySigner) -> Self {
        Self {
            signer: Some(signer),
            ..Self::unsigned()
        }
    }

    /// A client that cannot pay (useful to inspect challenges).
    pub fn unsigned() -> Self {
        Self {
            signer: None,
            rpc_url: None,
            policy: Policy::default(),
            intent: IntentChoice::Auto,
            mode: ChargeMode::Pull,
            state_path: crate::state::default_path(),
            fee_token: None,
            observer: None,
            http: None,
        }
    }
}

/// A request to send (and resend after paying: the body is kept).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl Request {
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }
    pub fn post(url: Url) -> Self {
        Self::new(Method::POST, url)
    }
    /// Adds a header (invalid names or values are ignored).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(n, v);
        }
        self
    }
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }
    /// A JSON body with `content-type` and `accept` set.
    pub fn json(mut self, body: impl Into<Bytes>) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        self.body = Some(body.into());
        self
    }
}

/// The final response (after paying, when a payment was needed).
pub struct PaidResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, streamed; for session streams, vouchers are sent in the
    /// background as the server asks for them.
    pub body: Body,
    /// The response's `Payment-Receipt`, decoded.
    pub receipt: Option<Receipt>,
    /// What was paid (`None`: no payment was needed).
    pub paid: Option<Payment>,
    /// The challenge that was paid.
    pub challenge: Option<PaymentChallenge>,
}

/// A response body as a stream of chunks.
pub struct Body {
    inner: BodyInner,
    final_receipt: Arc<Mutex<Option<Receipt>>>,
    /// This request's worst case held on its channel (local state).
    hold: Option<crate::state::LocalHold>,
}

enum BodyInner {
    Direct(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
    Metered(mpsc::Receiver<Result<Bytes>>),
}

impl Body {
    fn direct(response: reqwest::Response) -> Self {
        Self {
            inner: BodyInner::Direct(Box::pin(response.bytes_stream())),
            final_receipt: Arc::default(),
            hold: None,
        }
    }

    /// The next chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        self.next().await.transpose()
    }

    /// The whole body.
    pub async fn bytes(mut self) -> Result<Bytes> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.into())
    }

    /// The stream's final `payment-receipt` event, once the body was read
    /// to its end (session streams only).
    pub fn final_receipt(&self) -> Option<Receipt> {
        self.final_receipt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Stream for Body {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            BodyInner::Direct(s) => s
                .as_mut()
                .poll_next(cx)
                .map(|o| o.map(|r| r.map_err(Error::http))),
            BodyInner::Metered(rx) => rx.poll_recv(cx),
        }
    }
}

/// The result of [`Client::close_session`].
#[derive(Debug, Clone)]
pub struct CloseOutcome {
    pub channel_id: B256,
    /// The close voucher's amount (the last known `spent`).
    pub cumulative: u128,
    pub receipt: Receipt,
    /// The close transaction.
    pub tx_hash: Option<String>,
}

/// Pays 402 challenges and retries. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    signer: Option<PrivateKeySigner>,
    rpc: Option<Rpc>,
    policy: Policy,
    intent: IntentChoice,
    mode: ChargeMode,
    state_path: PathBuf,
    state: Mutex<Option<Arc<State>>>,
    fee_token: Option<Address>,
    observer: Option<Observer>,
    http: reqwest::Client,
}

/// What a streamed session response needs to answer vouchers.
struct StreamContext {
    url: Url,
    challenge: PaymentChallenge,
    offer: SessionOffer,
    channel_id: B256,
    /// The most this request may authorize in all.
    bound: u128,
}

const PROBLEM_LIMIT: usize = 64 * 1024;

impl Client {
    pub fn new(config: Config) -> Result<Self> {
        let http = match config.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .build()
                .map_err(|e| Error::Config(format!("HTTP client: {e}")))?,
        };
        let rpc = config
            .rpc_url
            .as_deref()
            .map(|url| Rpc::new(url, http.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                signer: config.signer,
                rpc,
                policy: config.policy,
                intent: config.intent,
                mode: config.mode,
                state_path: config.state_path,
                state: Mutex::new(None),
                fee_token: config.fee_token,
                observer: config.observer,
                http,
            }),
        })
    }

    /// The payer's address, when a key is set.
    pub fn payer(&self) -> Option<Address> {
        self.inner.signer.as_ref().map(|s| s.address())
    }

    /// The local channel state (opened, or created when `create`).
    pub fn state(&self, create: bool) -> Result<Option<Arc<State>>> {
        self.inner.state(create)
    }

    /// Sends `request`; pays once when the server asks for payment.
    pub async fn send(&self, request: Request) -> Result<PaidResponse> {
        let inner = &self.inner;
        let first = inner.dispatch(&request, None).await?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(wrap(first, None, None));
        }
        let values = www_authenticate(first.headers());
        let _ = read_problem(first).await;
        let challenges = challenge::parse_challenges(&values)?;
        for c in &challenges {
            inner.emit(Event::Challenge(c.clone()));
        }
        let (offer, channel) = inner.select(&challenges)?;
        inner.policy.check(&offer)?;
        inner.emit(Event::Selected(offer.challenge.clone()));
        match offer.kind.clone() {
            OfferKind::Charge(c) => inner.pay_charge(&request, &offer, &c).await,
            OfferKind::Session(s) => self.pay_session(&request, &offer, &s, channel).await,
        }
    }

    /// Closes this payer's channel with the server at `url`: `HEAD url`
    /// for a fresh session challenge, then a body-less `POST` with a
    /// `close` voucher for exactly the last known `spent`.
    pub async fn close_session(&self, url: Url) -> Result<CloseOutcome> {
        let inner = &self.inner;
        let head = inner
            .http
            .head(url.clone())
            .send()
            .await
            .map_err(Error::http)?;
        if head.status() != StatusCode::PAYMENT_REQUIRED {
            return Err(Error::Unsupported(format!(
                "HEAD {url} answered {}, not a 402 with a session challenge",
                head.status()
            )));
        }
        let challenges = challenge::parse_challenges(&www_authenticate(head.headers()))?;
        for c in &challenges {
            inner.emit(Event::Challenge(c.clone()));
        }
        let session_challenge = challenge::find(&challenges, "session").ok_or_else(|| {
            Error::Unsupported(format!(
                "the server offers no tempo session here (offered: {})",
                challenge::describe(&challenges)
            ))
        })?;
        let offer = challenge::decode(session_challenge)?;
        let OfferKind::Session(terms) = &offer.kind else {
            unreachable!("a session challenge decodes to a session offer")
        };
        // The close authorizes nothing new, but its terms must still be
        // ones the payer allows.
        let mut policy = inner.policy.clone();
        policy.max_amount = None;
        policy.check(&offer)?;
        let signer = inner.signer()?;
        let state = inner.state(false)?.ok_or_else(|| {
            Error::NoChannel(format!(
                "no channel state at {}: nothing to close",
                inner.state_path.display()
            ))
        })?;
        let key = channel_key(signer.address(), terms);
        let channel = state.find_open(&key)?.ok_or_else(|| {
            Error::NoChannel(format!(
                "no open channel with payee {} on escrow {} (chain {}) in {}",
                terms.recipient,
                terms.escrow,
                terms.chain_id,
                state.path().display()
            ))
        })?;
        // Exactly what was spent (Tollgate captures the smallest voucher
        // covering `spent`). Should our `spent` be stale (a receipt was
        // lost), the server refuses a close below its `spent`; then close
        // once more at the highest amount we signed, which the payer had
        // already authorized.
        let mut cumulative = channel.spent;
        let (status, receipt) = loop {
            let payload = session::voucher(
                "close",
                signer,
                channel.escrow,
                channel.chain_id,
                channel.channel_id,
                cumulative,
                channel.descriptor.as_deref(),
            )
            .await?;
            state.raise_signed(channel.channel_id, cumulative)?;
            let auth = session::authorization(&offer.challenge, payload)?;
            let response = inner
                .bodyless(&url, &offer.challenge, &auth, Method::POST)
                .await?;
            let status = response.status();
            let receipt = header_receipt(response.headers());
            let problem = read_problem(response).await;
            if status.is_success() {
                break (status, receipt);
            }
            if status == StatusCode::GONE {
                state.set_status(channel.channel_id, ChannelStatus::Closed)?;
            }
            // Anthropic-speaking routes keep the problem type as `problem_type`.
            let below_spent = problem.as_ref().is_some_and(|p| {
                ["type", "problem_type"].iter().any(|key| {
                    p.get(*key)
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.ends_with("session/delta-too-small"))
                })
            });
            if below_spent && cumulative < channel.signed {
                inner.emit(Event::Warning(format!(
                    "the server refused a close at {cumulative} (its spent is higher); closing at {}",
                    channel.signed
                )));
                cumulative = channel.signed;
                continue;
            }
            return Err(Error::refused(status.as_u16(), problem));
        };
        let receipt = receipt.ok_or_else(|| {
            Error::refused(
                status.as_u16(),
                Some(serde_json::json!({
                    "detail": "the close answer carries no Payment-Receipt"
                })),
            )
        })?;
        inner.emit(Event::Receipt(receipt.clone()));
        let tx_hash = receipt.tx_hash().map(str::to_owned);
        state.mark_closed(channel.channel_id, receipt.spent(), tx_hash.as_deref())?;
        Ok(CloseOutcome {
            channel_id: channel.channel_id,
            cumulative,
            receipt,
            tx_hash,
        })
    }

    async fn pay_session(
        &self,
        request: &Request,
        offer: &Offer,
        terms: &SessionOffer,
        channel: Option<ChannelRecord>,
    ) -> Result<PaidResponse> {
        let inner = &self.inner;
        let signer = inner.signer()?;
        let rpc = inner.rpc("sessions sign escrow transactions")?;
        inner.check_chain(rpc, terms.chain_id).await?;
        let state = inner
            .state(true)?
            .ok_or_else(|| Error::State("the channel store could not be created".into()))?;
        let fee_token = inner.fee_token.unwrap_or(terms.currency);
        let key = channel_key(signer.address(), terms);
        let channel = match channel {
            Some(c) => Some(c),
            None => state.find_open(&key)?,
        };
        let policy = &inner.policy;

        let Some(channel) = channel else {
            // Open a channel; its first voucher covers this request.
            let step = policy
                .authorize
                .map_or(terms.amount, |a| a.min(terms.amount));
            let deposit = policy.deposit(terms.suggested_deposit, step);
            if deposit == 0 {
                return Err(Error::Policy("the channel deposit would be 0".to_owned()));
            }
            if deposit < step {
                return Err(Error::Policy(format!(
                    "a deposit of {deposit} (--max-deposit) does not cover this request's worst case {step}; \
                     raise --max-deposit, or pay a stream as it goes with --authorize"
                )));
            }
            let initial = step.max(terms.min_voucher_delta).min(deposit);
            let (opening, descriptor) = if terms.v2 {
                let (opening, descriptor) =
                    reserve::open(signer, rpc, terms, deposit, initial, fee_token).await?;
                (opening, Some(descriptor.to_json().to_string()))
            } else {
                (
                    session::open(signer, rpc, terms, deposit, initial, fee_token).await?,
                    None,
                )
            };
            state.insert(&ChannelRecord {
                channel_id: opening.channel_id,
                payer: key.payer,
                payee: key.payee,
                token: key.token,
                escrow: key.escrow,
                chain_id: key.chain_id,
                origin: origin(&request.url),
                deposit,
                signed: initial,
                accepted: 0,
                spent: 0,
                status: ChannelStatus::Opening,
                close_tx: None,
                descriptor,
            })?;
            let payment = Payment::Session {
                channel_id: opening.channel_id,
                opened: true,
                cumulative: initial,
                deposit,
                top_up: None,
            };
            inner.emit(Event::Paying(payment.clone()));
            let auth = session::authorization(&offer.challenge, opening.payload)?;
            let response = inner
                .dispatch(request, Some((offer.challenge.credential_header(), &auth)))
                .await;
            // Whatever happened, learn from the chain whether it opened.
            let opened = match &response {
                Ok(r) if r.status().is_success() => true,
                _ => matches!(
                    chain_channel(rpc, terms.v2, terms.escrow, opening.channel_id).await,
                    Ok(c) if c.exists && !c.finalized
                ),
            };
            state.set_status(
                opening.channel_id,
                if opened {
                    ChannelStatus::Open
                } else {
                    ChannelStatus::Failed
                },
            )?;
            let context = StreamContext {
                url: request.url.clone(),
                challenge: offer.challenge.clone(),
                offer: terms.clone(),
                channel_id: opening.channel_id,
                bound: terms.worst_case.max(terms.amount).max(initial),
            };
            return self
                .finish_session(response?, payment, &state, context)
                .await;
        };

        // Other invocations may be paying on this channel right now: each
        // authorizes its own worst case on top of what they hold.
        let step = policy
            .authorize
            .map_or(terms.amount, |a| a.min(terms.amount));
        let (channel, target, hold) = state.authorize(channel.channel_id, step, |c, held| {
            session::next_cumulative(
                c.signed,
                c.accepted,
                c.spent.saturating_add(held),
                terms.amount,
                policy.authorize,
                terms.min_voucher_delta,
            )
        })?;
        let mut deposit = channel.deposit;
        let mut topped = None;
        if target > deposit {
            let cap = policy.deposit_cap(terms.suggested_deposit, deposit);
            let needed = target - deposit;
            if deposit.saturating_add(needed) <= cap {
                inner
                    .top_up(
                        &request.url,
                        offer,
                        terms,
                        &channel,
                        needed,
                        fee_token,
                        &state,
                    )
                    .await?;
                deposit += needed;
                topped = Some(needed);
            } else {
                return Err(Error::Policy(format!(
                    "channel {:#x} has {} of its deposit left, this request needs up to {}; \
                     a top-up to {target} would exceed the deposit cap {cap} \
                     (raise --max-deposit, or close the channel with `tollgate pay close`)",
                    channel.channel_id,
                    channel.remaining(),
                    target - channel.spent,
                )));
            }
        }
        let payload = session::voucher(
            "voucher",
            signer,
            channel.escrow,
            channel.chain_id,
            channel.channel_id,
            target,
            channel.descriptor.as_deref(),
        )
        .await?;
        state.raise_signed(channel.channel_id, target)?;
        let payment = Payment::Session {
            channel_id: channel.channel_id,
            opened: false,
            cumulative: target,
            deposit,
            top_up: topped,
        };
        inner.emit(Event::Paying(payment.clone()));
        let auth = session::authorization(&offer.challenge, payload)?;
        let response = inner
            .dispatch(request, Some((offer.challenge.credential_header(), &auth)))
            .await?;
        let context = StreamContext {
            url: request.url.clone(),
            challenge: offer.challenge.clone(),
            offer: terms.clone(),
            channel_id: channel.channel_id,
            bound: target.max(
                channel
                    .spent
                    .saturating_add(terms.worst_case.max(terms.amount)),
            ),
        };
        let mut paid = self
            .finish_session(response, payment, &state, context)
            .await?;
        // Held until the answer is read: its receipt is recorded by then.
        paid.body.hold = Some(hold);
        Ok(paid)
    }

    async fn finish_session(
        &self,
        response: reqwest::Response,
        payment: Payment,
        state: &Arc<State>,
        context: StreamContext,
    ) -> Result<PaidResponse> {
        let inner = &self.inner;
        let status = response.status();
        if status == StatusCode::GONE {
            // The server no longer takes this channel: forget it here too.
            state.set_status(context.channel_id, ChannelStatus::Closed)?;
            let problem = read_problem(response).await;
            return Err(Error::refused(status.as_u16(), problem).after(&payment));
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            let problem = read_problem(response).await;
            return Err(Error::refused(status.as_u16(), problem).after(&payment));
        }
        let receipt = header_receipt(response.headers());
        if let Some(r) = &receipt {
            inner.record(state, context.channel_id, r);
            inner.emit(Event::Receipt(r.clone()));
        }
        let streamed = status.is_success() && is_event_stream(response.headers());
        if !streamed {
            return Ok(wrap(response, receipt, Some((payment, context.challenge))));
        }
        let (tx, rx) = mpsc::channel(32);
        let slot: Arc<Mutex<Option<Receipt>>> = Arc::default();
        let paid_challenge = context.challenge.clone();
        let head = Head::of(&response);
        let upstream = response.bytes_stream();
        tokio::spawn(meter(
            self.inner.clone(),
            Box::pin(upstream),
            tx,
            context,
            state.clone(),
            slot.clone(),
        ));
        Ok(PaidResponse {
            status: head.status,
            version: head.version,
            headers: head.headers,
            body: Body {
                inner: BodyInner::Metered(rx),
                final_receipt: slot,
                hold: None,
            },
            receipt,
            paid: Some(payment),
            challenge: Some(paid_challenge),
        })
    }
}

impl Inner {
    fn emit(&self, event: Event) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    fn signer(&self) -> Result<&PrivateKeySigner> {
        self.signer.as_ref().ok_or_else(|| {
            Error::Config(
                "payment required, but no key: set TOLLGATE_PRIVATE_KEY or --key-file".to_owned(),
            )
        })
    }

    fn rpc(&self, why: &str) -> Result<&Rpc> {
        self.rpc
            .as_ref()
            .ok_or_else(|| Error::Config(format!("{why}: set --rpc-url")))
    }

    fn state(&self, create: bool) -> Result<Option<Arc<State>>> {
        let mut slot = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = slot.as_ref() {
            return Ok(Some(state.clone()));
        }
        if !create && !self.state_path.exists() {
            return Ok(None);
        }
        let state = Arc::new(State::open(&self.state_path)?);
        *slot = Some(state.clone());
        Ok(Some(state))
    }

    /// The RPC must be on the chain the payment is for.
    async fn check_chain(&self, rpc: &Rpc, chain_id: u64) -> Result<()> {
        let actual = rpc.chain_id().await?;
        if actual != chain_id {
            return Err(Error::Policy(format!(
                "the challenge is for chain {chain_id} but the RPC serves chain {actual}"
            )));
        }
        Ok(())
    }

    /// Picks the offer to pay, with the channel to use for a session.
    fn select(&self, challenges: &[PaymentChallenge]) -> Result<(Offer, Option<ChannelRecord>)> {
        let charge = challenge::find(challenges, "charge");
        let session = challenge::find_session(challenges);
        let offered = challenge::describe(challenges);
        let missing = |intent: &str| {
            Error::Unsupported(format!(
                "the server offers no tempo {intent} (offered: {offered})"
            ))
        };
        match self.intent {
            IntentChoice::Charge => Ok((
                challenge::decode(charge.ok_or_else(|| missing("charge"))?)?,
                None,
            )),
            IntentChoice::Session => Ok((
                challenge::decode_session(session.ok_or_else(|| missing("session"))?, challenges)?,
                None,
            )),
            IntentChoice::Auto => {
                if let Some(session) = session
                    && let Ok(offer) = challenge::decode_session(session, challenges)
                    && let Some(channel) = self.usable_channel(&offer)?
                {
                    return Ok((offer, Some(channel)));
                }
                match (charge, session) {
                    (Some(c), _) => Ok((challenge::decode(c)?, None)),
                    (None, Some(s)) => Ok((challenge::decode_session(s, challenges)?, None)),
                    (None, None) => Err(Error::Unsupported(format!(
                        "no offer this client can pay: offered {offered}; supported: tempo/charge, tempo/session"
                    ))),
                }
            }
        }
    }

    /// An open channel for the offer's terms with deposit left.
    fn usable_channel(&self, offer: &Offer) -> Result<Option<ChannelRecord>> {
        let (Some(signer), OfferKind::Session(terms)) = (&self.signer, &offer.kind) else {
            return Ok(None);
        };
        let Some(state) = self.state(false)? else {
            return Ok(None);
        };
        Ok(state
            .find_open(&channel_key(signer.address(), terms))?
            .filter(|c| c.remaining() > 0))
    }

    async fn pay_charge(
        &self,
        request: &Request,
        offer: &Offer,
        terms: &challenge::ChargeOffer,
    ) -> Result<PaidResponse> {
        let signer = self.signer()?;
        let mode = charge::resolve_mode(terms, self.mode)?;
        if let Some(rpc) = &self.rpc {
            self.check_chain(rpc, terms.chain_id).await?;
        }
        let signed = charge::pay(
            &offer.challenge,
            terms,
            signer,
            self.rpc.as_ref(),
            mode,
            self.fee_token,
        )
        .await?;
        let payment = Payment::Charge {
            challenge_id: offer.challenge.id.clone(),
            amount: terms.amount,
            currency: terms.currency,
            recipient: terms.recipient,
            chain_id: terms.chain_id,
            mode: signed.mode,
            tx_hash: signed.tx_hash.clone(),
            sponsored: terms.fee_payer && signed.mode == ChargeMode::Pull,
        };
        self.emit(Event::Paying(payment.clone()));
        let auth = mpp::format_authorization(&signed.credential).map_err(Error::signing)?;
        let response = self
            .dispatch(request, Some((offer.challenge.credential_header(), &auth)))
            .await?;
        if response.status() == StatusCode::PAYMENT_REQUIRED {
            let status = response.status().as_u16();
            let problem = read_problem(response).await;
            return Err(Error::refused(status, problem).after(&payment));
        }
        let receipt = header_receipt(response.headers());
        if let Some(r) = &receipt {
            self.emit(Event::Receipt(r.clone()));
        }
        Ok(wrap(
            response,
            receipt,
            Some((payment, offer.challenge.clone())),
        ))
    }

    /// approve + topUp, sent body-less (`HEAD`) before the paid request.
    #[allow(clippy::too_many_arguments)]
    async fn top_up(
        &self,
        url: &Url,
        offer: &Offer,
        terms: &SessionOffer,
        channel: &ChannelRecord,
        amount: u128,
        fee_token: Address,
        state: &State,
    ) -> Result<()> {
        let signer = self.signer()?;
        let rpc = self.rpc("a top-up signs an escrow transaction")?;
        let payload = match channel.descriptor.as_deref() {
            Some(json) => {
                let value: serde_json::Value = serde_json::from_str(json)
                    .map_err(|e| Error::State(format!("stored descriptor is not JSON: {e}")))?;
                let descriptor = reserve::Descriptor::from_json(&value)?;
                reserve::top_up(signer, rpc, terms, &descriptor, amount, fee_token).await?
            }
            None => {
                session::top_up(signer, rpc, terms, channel.channel_id, amount, fee_token).await?
            }
        };
        let v2 = channel.descriptor.is_some();
        let auth = session::authorization(&offer.challenge, payload)?;
        let response = self
            .bodyless(url, &offer.challenge, &auth, Method::HEAD)
            .await?;
        let status = response.status();
        if !status.is_success() {
            // The transaction may still have landed: read the deposit back.
            if let Ok(c) = chain_channel(rpc, v2, channel.escrow, channel.channel_id).await {
                state.set_deposit(channel.channel_id, c.deposit)?;
            }
            let problem = read_problem(response).await;
            return Err(Error::refused(status.as_u16(), problem));
        }
        let deposit = match chain_channel(rpc, v2, channel.escrow, channel.channel_id).await {
            Ok(c) => c.deposit,
            Err(_) => channel.deposit + amount,
        };
        state.set_deposit(channel.channel_id, deposit)?;
        if let Some(r) = header_receipt(response.headers()) {
            self.record(state, channel.channel_id, &r);
        }
        Ok(())
    }

    /// A receipt for `channel`: what the server accepted and spent.
    fn record(&self, state: &State, channel: B256, receipt: &Receipt) {
        let matches = receipt
            .channel_id()
            .and_then(|id| id.parse::<B256>().ok())
            .is_none_or(|id| id == channel);
        if !matches {
            return;
        }
        if let Err(e) =
            state.record_receipt(channel, receipt.accepted_cumulative(), receipt.spent())
        {
            self.emit(Event::Warning(e.to_string()));
        }
    }

    /// Sends `request`, with the credential in `auth` = (header, value).
    async fn dispatch(
        &self,
        request: &Request,
        auth: Option<(&str, &str)>,
    ) -> Result<reqwest::Response> {
        let mut headers = request.headers.clone();
        if let Some((name, value)) = auth {
            // The credential replaces whatever the caller put in that field.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(Error::signing)?;
            let value = HeaderValue::from_str(value).map_err(Error::signing)?;
            headers.insert(name, value);
        }
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .headers(headers);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        builder.send().await.map_err(Error::http)
    }

    /// A body-less request carrying a session credential.
    async fn bodyless(
        &self,
        url: &Url,
        challenge: &PaymentChallenge,
        auth: &str,
        method: Method,
    ) -> Result<reqwest::Response> {
        self.http
            .request(method, url.clone())
            .header(challenge.credential_header(), auth)
            .header(reqwest::header::CONTENT_LENGTH, "0")
            .send()
            .await
            .map_err(Error::http)
    }

    /// Answers `payment-need-voucher`: a voucher for `requiredCumulative`
    /// on a body-less `POST` to the same URL, reusing the request's
    /// challenge.
    async fn answer_need_voucher(
        &self,
        context: &StreamContext,
        state: &State,
        data: &str,
    ) -> Result<()> {
        let need: Value = serde_json::from_str(data)
            .map_err(|e| Error::MalformedChallenge(format!("payment-need-voucher: {e}")))?;
        let number = |field: &str| -> Result<u128> {
            need.get(field)
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    Error::MalformedChallenge(format!("payment-need-voucher: bad {field}"))
                })
        };
        let required = number("requiredCumulative")?;
        let accepted = number("acceptedCumulative")?;
        let deposit = number("deposit")?;
        let channel_id = need
            .get("channelId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.emit(Event::NeedVoucher {
            channel_id: channel_id.clone(),
            required,
            accepted,
            deposit,
        });
        if channel_id.parse::<B256>().ok() != Some(context.channel_id) {
            return Err(Error::Policy(format!(
                "the stream asks for a voucher on another channel ({channel_id})"
            )));
        }
        if required > context.bound {
            return Err(Error::Policy(format!(
                "the stream asks for {required} cumulative, beyond this request's worst case ({})",
                context.bound
            )));
        }
        let channel = state
            .get(context.channel_id)?
            .ok_or_else(|| Error::NoChannel("the channel left the local state".to_owned()))?;
        if required > channel.deposit.max(deposit) {
            let cap = self
                .policy
                .deposit_cap(context.offer.suggested_deposit, channel.deposit);
            let needed = required - channel.deposit.max(deposit);
            if channel.deposit.saturating_add(needed) > cap {
                return Err(Error::Policy(format!(
                    "the stream needs {required} cumulative, above the deposit {} and the deposit cap {cap}",
                    channel.deposit
                )));
            }
            let offer = Offer {
                challenge: context.challenge.clone(),
                kind: OfferKind::Session(context.offer.clone()),
            };
            let fee_token = self.fee_token.unwrap_or(context.offer.currency);
            self.top_up(
                &context.url,
                &offer,
                &context.offer,
                &channel,
                needed,
                fee_token,
                state,
            )
            .await?;
        }
        let cumulative = required.max(channel.signed.min(context.bound));
        let signer = self.signer()?;
        let payload = session::voucher(
            "voucher",
            signer,
            channel.escrow,
            channel.chain_id,
            channel.channel_id,
            cumulative,
            channel.descriptor.as_deref(),
        )
        .await?;
        state.raise_signed(channel.channel_id, cumulative)?;
        let auth = session::authorization(&context.challenge, payload)?;
        let response = self
            .bodyless(&context.url, &context.challenge, &auth, Method::POST)
            .await?;
        let status = response.status();
        let receipt = header_receipt(response.headers());
        let problem = read_problem(response).await;
        if !status.is_success() {
            return Err(Error::refused(status.as_u16(), problem));
        }
        if let Some(r) = &receipt {
            self.record(state, channel.channel_id, r);
        }
        self.emit(Event::VoucherSent {
            cumulative,
            receipt,
        });
        Ok(())
    }
}

/// Forwards a session stream's bytes, answering vouchers and recording
/// the final receipt as they pass.
async fn meter(
    inner: Arc<Inner>,
    mut upstream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    tx: mpsc::Sender<Result<Bytes>>,
    context: StreamContext,
    state: Arc<State>,
    slot: Arc<Mutex<Option<Receipt>>>,
) {
    let mut parser = SseParser::default();
    while let Some(chunk) = upstream.next().await {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = tx.send(Err(Error::http(e))).await;
                return;
            }
        };
        let events = parser.feed(&bytes);
        if tx.send(Ok(bytes)).await.is_err() {
            return; // the reader is gone
        }
        for event in events {
            match event.name.as_str() {
                "payment-need-voucher" => {
                    if let Err(e) = inner
                        .answer_need_voucher(&context, &state, &event.data)
                        .await
                    {
                        inner.emit(Event::Warning(format!(
                            "could not answer payment-need-voucher: {e}"
                        )));
                    }
                }
                "payment-receipt" => match serde_json::from_str::<Value>(&event.data) {
                    Ok(json) if json.is_object() => {
                        let receipt = Receipt(json);
                        inner.record(&state, context.channel_id, &receipt);
                        inner.emit(Event::StreamReceipt(receipt.clone()));
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(receipt);
                    }
                    _ => inner.emit(Event::Warning(
                        "unreadable payment-receipt event".to_owned(),
                    )),
                },
                _ => {}
            }
        }
    }
}

struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn of(response: &reqwest::Response) -> Self {
        Self {
            status: response.status(),
            version: response.version(),
            headers: response.headers().clone(),
        }
    }
}

fn wrap(
    response: reqwest::Response,
    receipt: Option<Receipt>,
    paid: Option<(Payment, PaymentChallenge)>,
) -> PaidResponse {
    let head = Head::of(&response);
    let (paid, challenge) = match paid {
        Some((p, c)) => (Some(p), Some(c)),
        None => (None, None),
    };
    PaidResponse {
        status: head.status,
        version: head.version,
        headers: head.headers,
        body: Body::direct(response),
        receipt,
        paid,
        challenge,
    }
}

/// A channel's state on chain: the escrow's `getChannel` (v1) or the
/// reserve's `getChannelState` (v2).
async fn chain_channel(
    rpc: &Rpc,
    v2: bool,
    escrow: Address,
    id: B256,
) -> Result<crate::rpc::ChainChannel> {
    if v2 {
        rpc.channel_v2(escrow, id).await
    } else {
        rpc.channel(escrow, id).await
    }
}

fn channel_key(payer: Address, terms: &SessionOffer) -> ChannelKey {
    ChannelKey {
        payer,
        payee: terms.recipient,
        token: terms.currency,
        escrow: terms.escrow,
        chain_id: terms.chain_id,
    }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn www_authenticate(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn header_receipt(headers: &HeaderMap) -> Option<Receipt> {
    headers
        .get("payment-receipt")
        .and_then(|v| v.to_str().ok())
        .and_then(Receipt::from_header)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// A refusal's problem body (problem+json, or its text as `detail`).
async fn read_problem(response: reqwest::Response) -> Option<Value> {
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > PROBLEM_LIMIT {
            body.truncate(PROBLEM_LIMIT);
            break;
        }
    }
    if body.is_empty() {
        return None;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(json) if json.is_object() => Some(json),
        _ => {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(500).collect();
            Some(serde_json::json!({ "detail": text }))
        }
    }
}

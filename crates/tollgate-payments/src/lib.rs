//! The Machine Payments Protocol for Tollgate, over the `mpp` crate.
//!
//! Nothing outside this crate imports `mpp`: the server sees offers,
//! challenge header values, problems and receipt header values.
#![forbid(unsafe_code)]

pub mod binding;
mod challenge;
mod charge;
pub mod credentials;
mod hold;
mod keys;
mod offer;
mod problem;
mod redact;
mod refund;
pub mod session;
pub mod session_v2;
mod store;

use std::sync::Arc;

use tollgate_ledger::{ChargeRecord, ClaimOutcome, Ledger};

pub use binding::DEFAULT_MAX_CREDENTIAL_BYTES;
pub use challenge::{ChallengeIssuer, IssuedChallenge, body_digest, route_opaque};
pub use charge::{ChainSettings, SettledCharge, TempoChargeVerifier};
pub use keys::{BoundFields, ChallengeKeys, KeyError, MIN_SECRET_BYTES};
pub use offer::{ChargeOffer, Offer, SubmissionModes, rank_offers};
pub use problem::{PROBLEM_BASE, PaymentProblem, ProblemKind};
pub use redact::redact_hex;
pub use refund::{RefundError, RefundOrder, RefundReason, RefundSettings, Refundable, Refunds};

/// Re-exported chain types the configuration needs.
pub use alloy::primitives::Address;
pub use alloy::signers::local::PrivateKeySigner;

/// A request whose payment is settled and recorded.
#[derive(Debug, Clone)]
pub struct Paid {
    pub challenge_id: String,
    pub reference: String,
    pub receipt_header: String,
    /// What was paid, in base units.
    pub amount: u128,
    /// Time spent on the chain (simulation, broadcast, receipt).
    pub chain_time: std::time::Duration,
}

/// A credential that passed its checks.
#[derive(Debug)]
pub enum Authorized {
    /// A charge, to be settled.
    Charge(Pending),
    /// A session action applied to its channel; the request still needs a
    /// reservation for what it buys.
    Session(SessionAuthorized),
}

#[derive(Debug, Clone)]
pub struct SessionAuthorized {
    pub challenge_id: String,
    /// `open`, `topUp`, `voucher` or `close`.
    pub action: &'static str,
    pub applied: session::Applied,
    /// The voucher the credential carried (none for a top-up): for the
    /// session snapshot a paid answer carries.
    pub voucher: Option<Box<session::SignedVoucher>>,
}

/// Issues challenges and turns credentials into settled, recorded payments.
pub struct PaymentGate {
    issuer: ChallengeIssuer,
    verifier: TempoChargeVerifier,
    sessions: Option<Arc<session::SessionGate>>,
    refunds: Option<Arc<Refunds>>,
    ledger: Arc<dyn Ledger>,
    max_credential_bytes: usize,
    /// Session credentials re-sent with every request, decoded once.
    credentials: credentials::CredentialCache,
}

/// What the credential cache may hold per generation (two are kept).
const CREDENTIAL_CACHE_BYTES: usize = 1024 * 1024;

impl PaymentGate {
    pub fn new(
        issuer: ChallengeIssuer,
        verifier: TempoChargeVerifier,
        ledger: Arc<dyn Ledger>,
        max_credential_bytes: usize,
    ) -> Self {
        Self {
            issuer,
            verifier,
            sessions: None,
            refunds: None,
            ledger,
            max_credential_bytes,
            credentials: credentials::CredentialCache::new(CREDENTIAL_CACHE_BYTES),
        }
    }

    /// Accepts session credentials too.
    pub fn with_sessions(mut self, sessions: Arc<session::SessionGate>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    pub fn sessions(&self) -> Option<&Arc<session::SessionGate>> {
        self.sessions.as_ref()
    }

    /// Refunds charges whose answer was not delivered.
    pub fn with_refunds(mut self, refunds: Arc<Refunds>) -> Self {
        self.refunds = Some(refunds);
        self
    }

    pub fn refunds(&self) -> Option<&Arc<Refunds>> {
        self.refunds.as_ref()
    }

    /// A settled charge on `route` as a value that refunds it when dropped
    /// (`None` for a zero-amount proof, or without refunds configured).
    pub fn refundable(&self, paid: &Paid, route: &str) -> Option<Refundable> {
        if paid.amount == 0 {
            return None;
        }
        let Some(refunds) = &self.refunds else {
            tracing::error!("a charge cannot be refunded: this gate has no refunds");
            return None;
        };
        Some(Refundable::new(
            Arc::clone(refunds),
            RefundOrder {
                challenge_id: paid.challenge_id.clone(),
                route: route.to_owned(),
                charge_reference: paid.reference.clone(),
                charged: paid.amount,
                amount: paid.amount,
                reason: RefundReason::Undelivered,
            },
        ))
    }

    pub fn issuer(&self) -> &ChallengeIssuer {
        &self.issuer
    }

    pub fn max_credential_bytes(&self) -> usize {
        self.max_credential_bytes
    }

    fn credential(
        &self,
        authorization: Option<&str>,
    ) -> Result<mpp::PaymentCredential, PaymentProblem> {
        match authorization.and_then(|v| binding::parse_authorization(v, self.max_credential_bytes))
        {
            None => Err(PaymentProblem::new(
                ProblemKind::PaymentRequired,
                "this resource requires payment",
            )),
            Some(parsed) => parsed,
        }
    }

    /// The credential in `authorization`, decoded and its challenge checked
    /// for our HMAC. A session credential of ours is kept for when it is
    /// sent again (the same voucher comes with every request until it runs
    /// out); one-off charge credentials and forgeries are not.
    fn parsed(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<credentials::Parsed>, PaymentProblem> {
        if let Some(parsed) = authorization.and_then(|header| self.credentials.get(header)) {
            return Ok(parsed);
        }
        let credential = self.credential(authorization)?;
        let parsed = Arc::new(credentials::Parsed {
            verified: binding::Verified::new(self.issuer.keys(), &credential),
            credential,
        });
        if let Some(header) = authorization
            && parsed.verified.issued_here()
            && parsed.credential.challenge.intent.as_str() == "session"
        {
            self.credentials.keep(header, Arc::clone(&parsed));
        }
        Ok(parsed)
    }

    /// A session credential on a request that buys nothing itself (a
    /// body-less voucher, top-up, open or close, or any `HEAD`).
    pub async fn authorize_session_action(
        &self,
        authorization: Option<&str>,
        scope: &str,
    ) -> Result<SessionAuthorized, PaymentProblem> {
        let credential = self.credential(authorization)?;
        let sessions = self.session_gate()?;
        let action = session::Action::parse(&credential.payload)?;
        let fresh = matches!(action, session::Action::Open(_) | session::Action::TopUp(_));
        // The credential answered one of our session challenges: v1 or v2.
        let mut answered = Err(PaymentProblem::new(
            ProblemKind::InvalidChallenge,
            "challenge names other channel terms",
        ));
        for terms in sessions.offers(0, None) {
            answered = binding::check_session_terms(
                self.issuer.keys(),
                &credential,
                self.issuer.realm(),
                scope,
                &terms,
                fresh,
            )
            .map(|()| terms.protocol);
            if answered.is_ok() {
                break;
            }
        }
        let protocol = answered?;
        let mut applied = sessions.apply_as(&action, 0, None, Some(protocol)).await?;
        if applied.seen {
            // A re-sent voucher is answered from what the gate last saw;
            // a receipt that buys nothing reports the channel as stored.
            applied.channel = sessions.current(&applied.channel.channel_id).await?;
        }
        Ok(SessionAuthorized {
            challenge_id: credential.challenge.id.clone(),
            action: action.name(),
            applied,
            voucher: action.voucher().cloned().map(Box::new),
        })
    }

    fn session_gate(&self) -> Result<&Arc<session::SessionGate>, PaymentProblem> {
        self.sessions.as_ref().ok_or_else(|| {
            PaymentProblem::new(
                ProblemKind::MethodUnsupported,
                "sessions are not offered here",
            )
        })
    }

    /// Fresh challenges for `offers`, in the client's `Accept-Payment` order.
    pub fn challenges(
        &self,
        offers: &[Offer],
        scope: &str,
        body: &[u8],
        accept_payment: Option<&str>,
    ) -> Result<Vec<IssuedChallenge>, PaymentProblem> {
        self.issuer
            .issue_all(rank_offers(offers, accept_payment), scope, body)
    }

    /// Settles the payment carried by `authorization` for this route and
    /// body: [`authorize`](Self::authorize) then [`settle`](Self::settle).
    pub async fn pay(
        &self,
        authorization: Option<&str>,
        offers: &[Offer],
        scope: &str,
        body: &[u8],
    ) -> Result<Paid, PaymentProblem> {
        match self.authorize(authorization, offers, scope, body).await? {
            Authorized::Charge(pending) => self.settle(pending).await,
            Authorized::Session(_) => Err(PaymentProblem::new(
                ProblemKind::MethodUnsupported,
                "a session credential cannot pay a one-off charge",
            )),
        }
    }

    /// Everything short of moving money: parses the credential, checks its
    /// binding to this route, body and price, takes the challenge's
    /// single-use claim (atomic; exactly one concurrent submission gets it)
    /// and prechecks a pull transaction (validity window, simulation).
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        offers: &[Offer],
        scope: &str,
        body: &[u8],
    ) -> Result<Authorized, PaymentProblem> {
        let parsed = self.parsed(authorization)?;
        let credential = &parsed.credential;
        let spend = binding::Spend {
            realm: self.issuer.realm(),
            scope,
            body,
            offers,
        };
        let offer = match parsed.verified.check(&credential.challenge, &spend)? {
            Offer::TempoCharge(offer) => offer,
            Offer::TempoSession(offer) => {
                // Session challenges are not single-use: the voucher is the
                // payment, and the channel's accounting makes it count once.
                let sessions = self.session_gate()?;
                let action = session::Action::parse(&credential.payload)?;
                let applied = sessions
                    .apply_as(&action, offer.amount, None, Some(offer.protocol))
                    .await?;
                return Ok(Authorized::Session(SessionAuthorized {
                    challenge_id: credential.challenge.id.clone(),
                    action: action.name(),
                    applied,
                    voucher: action.voucher().cloned().map(Box::new),
                }));
            }
        };
        let credential = Arc::try_unwrap(parsed).map_or_else(
            |shared| shared.credential.clone(),
            |parsed| parsed.credential,
        );
        let claim = format!("challenge:{}", credential.challenge.id);
        match self.ledger.claim(&claim).await.map_err(store_failure)? {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::AlreadyClaimed => {
                return Err(PaymentProblem::new(
                    ProblemKind::InvalidChallenge,
                    "challenge has already been used",
                ));
            }
        }
        let pending = Pending {
            pull: credential.payload.get("type").and_then(|t| t.as_str()) == Some("transaction"),
            credential,
            offer: offer.clone(),
            release: hold::ReleaseOnDrop::claim(Arc::clone(&self.ledger), claim.clone()),
            claim,
            scope: scope.to_owned(),
            chain_time: std::time::Duration::ZERO,
        };
        let started = std::time::Instant::now();
        if let Err(problem) = self
            .verifier
            .precheck(&pending.credential, &pending.offer)
            .await
        {
            self.release(pending).await;
            return Err(problem);
        }
        Ok(Authorized::Charge(Pending {
            chain_time: started.elapsed(),
            ..pending
        }))
    }

    /// Moves the money (or confirms it moved) and records the charge. On
    /// failure the claim is released: nothing was accepted, so the client may
    /// retry the same challenge; the SDK's per-transaction marker still stops
    /// a second use of a transaction that did land.
    pub async fn settle(&self, pending: Pending) -> Result<Paid, PaymentProblem> {
        let started = std::time::Instant::now();
        let mut pending = pending;
        let settled = match self.verifier.settle(&pending.credential).await {
            Ok(settled) => settled,
            Err(problem) => {
                self.release(pending).await;
                return Err(problem);
            }
        };
        // Money moved: the claim is never given back, even if recording
        // fails below (the transaction's own marker stops a second use).
        pending.release.disarm();
        let chain_time = pending.chain_time + started.elapsed();
        let record = ChargeRecord {
            challenge_id: pending.credential.challenge.id.clone(),
            route: pending.scope.clone(),
            amount: pending.offer.amount.to_string(),
            currency: pending.offer.currency.to_checksum(None),
            reference: settled.reference.clone(),
            settled_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let tx_claim = format!("tx:{}", settled.reference.to_ascii_lowercase());
        self.ledger
            .record_charge(&record, &[&pending.claim, &tx_claim])
            .await
            .map_err(store_failure)?;
        Ok(Paid {
            challenge_id: record.challenge_id,
            reference: settled.reference,
            receipt_header: settled.receipt_header,
            amount: pending.offer.amount,
            chain_time,
        })
    }

    /// Gives the challenge back after a failure that moved no money, awaiting
    /// the store (dropping a `Pending` releases it in the background).
    pub async fn release(&self, mut pending: Pending) {
        match self.ledger.release_claim(&pending.claim).await {
            Ok(()) => pending.release.disarm(),
            Err(e) => tracing::warn!(error = %e, "could not release challenge claim"),
        }
    }
}

/// A credential that passed every check short of settlement, holding its
/// challenge's claim. Settle it, release it, or drop it: a dropped claim is
/// released (the client went away before anything was broadcast).
#[derive(Debug)]
pub struct Pending {
    credential: mpp::PaymentCredential,
    offer: ChargeOffer,
    claim: String,
    release: hold::ReleaseOnDrop,
    scope: String,
    pull: bool,
    chain_time: std::time::Duration,
}

impl Pending {
    pub fn challenge_id(&self) -> &str {
        &self.credential.challenge.id
    }

    /// A client-signed transaction that is not on chain yet (so settlement
    /// can wait until the upstream has answered).
    pub fn is_unbroadcast(&self) -> bool {
        self.pull
    }
}

fn store_failure(error: tollgate_ledger::LedgerError) -> PaymentProblem {
    store_problem(&error)
}

/// The problem for a ledger failure: 503 `store-unavailable` while the store
/// is away (retry later), else 500. Logged here.
pub fn store_problem(error: &tollgate_ledger::LedgerError) -> PaymentProblem {
    if error.is_unavailable() {
        tracing::warn!(error = %error, "payment state store unavailable");
        PaymentProblem::new(
            ProblemKind::StoreUnavailable,
            "payment state cannot be reached right now; nothing was charged",
        )
    } else {
        tracing::error!(error = %error, "ledger failure on the payment path");
        PaymentProblem::new(ProblemKind::Internal, "payment state could not be stored")
    }
}

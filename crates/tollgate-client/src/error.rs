//! What can go wrong while paying. Every variant says whether money may
//! have moved: only [`Error::Refused`] and [`Error::Http`] after a payment
//! was sent can follow a payment; everything checked before signing leaves
//! the wallet untouched.

use serde_json::Value;

use crate::http::Payment;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client is not set up to pay (no key, no RPC URL, bad option).
    #[error("{0}")]
    Config(String),
    /// Transport failure talking to the server.
    #[error("request failed: {0}")]
    Http(String),
    /// A 402 whose `WWW-Authenticate` offers could not be read.
    #[error("malformed payment challenge: {0}")]
    MalformedChallenge(String),
    /// No offer is one this client can pay (method/intent unknown, or not
    /// the intent asked for).
    #[error("{0}")]
    Unsupported(String),
    /// The chosen challenge's `expires` is in the past.
    #[error("the payment challenge expired at {0}; nothing was paid")]
    Expired(String),
    /// The spend policy refused the challenge before anything was signed.
    #[error("refused by spend policy: {0}; nothing was signed or paid")]
    Policy(String),
    /// Signing or building the payment failed (nothing was sent).
    #[error("could not sign the payment: {0}")]
    Signing(String),
    /// The chain refused or could not be reached.
    #[error("chain: {0}")]
    Chain(String),
    /// The local channel state (SQLite) failed.
    #[error("channel state: {0}")]
    State(String),
    /// No open channel for this server in the local state.
    #[error("{0}")]
    NoChannel(String),
    /// The server refused the payment (a 402 or 410 after paying). Not
    /// retried: nothing is paid twice.
    #[error("the server refused the payment ({status}): {detail}")]
    Refused {
        status: u16,
        detail: String,
        /// The problem+json body, when there was one.
        problem: Option<Value>,
        /// What had been sent (a push transfer was broadcast; a pull
        /// transfer was handed to the server; a voucher was signed).
        paid: Option<Box<Payment>>,
    },
}

impl Error {
    pub(crate) fn http(e: impl std::fmt::Display) -> Self {
        Self::Http(e.to_string())
    }

    pub(crate) fn state(e: impl std::fmt::Display) -> Self {
        Self::State(e.to_string())
    }

    pub(crate) fn signing(e: impl std::fmt::Display) -> Self {
        Self::Signing(e.to_string())
    }

    /// A refusal described by a problem+json body (or its absence).
    pub(crate) fn refused(status: u16, problem: Option<Value>) -> Self {
        let detail = problem
            .as_ref()
            .map(problem_summary)
            .unwrap_or_else(|| "no problem details".to_owned());
        Self::Refused {
            status,
            detail,
            problem,
            paid: None,
        }
    }

    /// Notes what had been sent when the server refused.
    pub(crate) fn after(mut self, payment: &Payment) -> Self {
        if let Self::Refused { paid, .. } = &mut self {
            *paid = Some(Box::new(payment.clone()));
        }
        self
    }
}

/// `code: detail` (plus the numbers a payer needs) from a problem body.
pub fn problem_summary(problem: &Value) -> String {
    let code = problem
        .get("code")
        .and_then(Value::as_str)
        .or_else(|| problem.get("type").and_then(Value::as_str))
        .unwrap_or("error");
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .or_else(|| problem.get("title").and_then(Value::as_str))
        .unwrap_or("");
    let mut out = if detail.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {detail}")
    };
    for extra in ["requiredTopUp", "acceptedCumulative", "spent", "deposit"] {
        if let Some(v) = problem.get(extra).and_then(Value::as_str) {
            out.push_str(&format!(" ({extra} {v})"));
        }
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

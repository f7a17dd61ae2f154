//! The paying side of the Machine Payments Protocol (HTTP 402) on Tempo.
//!
//! [`Client::send`] sends a request; on a `402 Payment Required` it reads
//! the offers (`WWW-Authenticate: Payment …`), picks one, checks it against
//! the [`Policy`] **before signing anything**, pays and retries the same
//! request once. A second 402 is an error: nothing is paid twice.
//!
//! - `charge`: a signed TIP-20 transfer, sent for the server to broadcast
//!   (pull) or broadcast here (push).
//! - `session`: a v1 escrow channel, opened once and kept in a local SQLite
//!   file ([`State`]), then paid with cumulative vouchers. Streamed
//!   responses that pause for a voucher (`event: payment-need-voucher`) are
//!   answered in the background while the body streams on.
//!   [`Client::close_session`] closes a server's channel for exactly what
//!   was spent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tollgate_client::Error> {
//! use tollgate_client::{Client, Config, Request};
//! let key = std::env::var("TOLLGATE_PRIVATE_KEY").unwrap();
//! let mut config = Config::new(key.parse().unwrap());
//! config.rpc_url = Some("http://127.0.0.1:8545".into());
//! config.policy.max_amount = Some(50_000);
//! let client = Client::new(config)?;
//! let request = Request::post("http://127.0.0.1:8080/v1/chat/completions".parse().unwrap())
//!     .json(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#);
//! let paid = client.send(request).await?;
//! println!("{} {:?}", paid.status, paid.receipt);
//! let body = paid.body.bytes().await?;
//! # let _ = body; Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod challenge;
pub mod charge;
mod error;
mod http;
pub mod policy;
pub mod proxy;
pub mod receipt;
pub mod reserve;
mod rpc;
pub mod session;
pub mod state;

pub use alloy::primitives::{Address, B256};
pub use alloy::signers::local::PrivateKeySigner;
pub use challenge::{IntentChoice, Offer, OfferKind};
pub use charge::ChargeMode;
pub use error::{Error, Result, problem_summary};
pub use http::{
    Body, Client, CloseOutcome, Config, Event, Observer, PaidResponse, Payment, Request,
};
pub use policy::Policy;
pub use receipt::Receipt;
pub use reqwest::{Method, StatusCode, Url, header};
pub use state::{ChannelRecord, ChannelStatus, State};

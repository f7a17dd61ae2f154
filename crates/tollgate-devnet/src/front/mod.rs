//! The devnet's RPC front: a loopback HTTP proxy before anvil that does
//! what only the real channel reserve precompile could. Before forwarding a
//! raw transaction that calls the reserve's `open`, it computes the
//! transaction's expiring-nonce hash and writes it where the stand-in reads
//! it (`anvil_setStorageAt`); before `open`/`topUp` it grants the reserve the
//! payer's allowance (the precompile needs none, TIP-1035); and it gives RPC
//! simulations the node's simulation context. It also papers over two anvil
//! quirks that break unmodified Tempo clients ([`quirks`]). Everything else
//! — other methods, batches, errors, status codes — passes through byte for
//! byte.
//!
//! It runs on its own thread and runtime so it keeps serving while the
//! thread that started the devnet blocks (for example on a child process
//! that pays through the chain).

mod inspect;
mod quirks;
mod simulation;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{Mutex, oneshot};

use crate::DevnetError;
use crate::rpc::RpcClient;
use inspect::{Action, Expiring, inspect};
use quirks::GasFloor;

/// A running front. Dropping it stops it.
pub(crate) struct Front {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl Front {
    /// Listens on `port` (a free one when `None`) and forwards to `upstream`.
    pub(crate) fn start(port: Option<u16>, upstream: &str) -> Result<Self, DevnetError> {
        let fail = |e: std::io::Error| DevnetError::Start(format!("RPC front: {e}"));
        let listener =
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port.unwrap_or(0))))
                .map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let port = listener.local_addr().map_err(fail)?.port();
        let relay = Arc::new(Relay {
            http: crate::rpc::bounded_client(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            chain: RpcClient::new(upstream),
            expiring: Mutex::new(()),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(fail)?;
        std::thread::Builder::new()
            .name("devnet-rpc-front".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = Router::new().fallback(relay_request).with_state(relay);
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result {
                                tracing::warn!(error = %e, "devnet RPC front stopped");
                            }
                        }
                        _ = stopped => {}
                    }
                });
            })
            .map_err(fail)?;
        Ok(Self {
            port,
            stop: Some(stop),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct Relay {
    http: reqwest::Client,
    upstream: String,
    /// The same node, for the front's own storage writes.
    chain: RpcClient,
    /// Expiring-nonce transactions go to anvil one at a time (see [`quirks`]).
    expiring: Mutex<()>,
}

/// A request ready to forward, with what to do around it.
struct Prepared {
    body: Bytes,
    floors: Vec<GasFloor>,
    expiring: Vec<Expiring>,
}

async fn relay_request(
    State(relay): State<Arc<Relay>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prepared = relay.prepare(body).await;
    let _one_at_a_time = match prepared.expiring.is_empty() {
        true => None,
        false => Some(relay.expiring.lock().await),
    };
    for expiring in &prepared.expiring {
        if let Err(e) = relay.reopen_expiring_lane(expiring).await {
            tracing::warn!(error = %e, "devnet RPC front could not reset an expiring-nonce lane");
        }
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = relay.http.post(format!("{}{path}", relay.upstream));
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let response = match request.body(prepared.body).send().await {
        Ok(response) => response,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("devnet chain unreachable: {e}"),
            )
                .into_response();
        }
    };
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("devnet chain answer: {e}")).into_response();
        }
    };
    if !answered_with_error(&bytes) {
        for expiring in &prepared.expiring {
            relay.await_mined(expiring.tx_hash).await;
        }
    }
    let bytes = raise_gas(bytes, &prepared.floors);
    let mut answer = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    answer
}

/// A single JSON-RPC answer carrying an error (nothing will be mined).
fn answered_with_error(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|answer| answer.get("error").is_some())
}

fn raise_gas(bytes: Bytes, floors: &[GasFloor]) -> Bytes {
    if floors.is_empty() {
        return bytes;
    }
    let Ok(mut response) = serde_json::from_slice::<Value>(&bytes) else {
        return bytes;
    };
    match quirks::raise_gas(&mut response, floors) {
        true => serde_json::to_vec(&response)
            .map(Bytes::from)
            .unwrap_or(bytes),
        false => bytes,
    }
}

impl Relay {
    /// Applies what the request's transactions need and returns the body to
    /// forward: the original bytes unless a simulation got its context.
    async fn prepare(&self, body: Bytes) -> Prepared {
        let untouched = |body| Prepared {
            body,
            floors: Vec::new(),
            expiring: Vec::new(),
        };
        let Ok(mut message) = serde_json::from_slice::<Value>(&body) else {
            return untouched(body);
        };
        let mut actions = Vec::new();
        let mut floors = Vec::new();
        let mut expiring = Vec::new();
        let mut rewritten = false;
        for request in requests(&mut message) {
            floors.extend(quirks::gas_floor(request));
            match request.get("method").and_then(Value::as_str) {
                Some("eth_sendRawTransaction" | "eth_sendRawTransactionSync") => {
                    if let Some(raw) = request.pointer("/params/0").and_then(Value::as_str) {
                        let inspection = inspect(raw);
                        actions.extend(inspection.actions);
                        expiring.extend(inspection.expiring);
                    }
                }
                Some("eth_call" | "eth_estimateGas") => {
                    rewritten |= simulation::add_simulation_context(request);
                }
                _ => {}
            }
        }
        for action in actions {
            if let Err(e) = self.apply(&action).await {
                // The transaction still goes through: the chain's answer
                // (a revert) is more useful to the caller than ours.
                tracing::warn!(error = %e, "devnet RPC front could not prepare a transaction");
            }
        }
        let body = match rewritten {
            true => serde_json::to_vec(&message)
                .map(Bytes::from)
                .unwrap_or(body),
            false => body,
        };
        Prepared {
            body,
            floors,
            expiring,
        }
    }

    async fn apply(&self, action: &Action) -> Result<(), DevnetError> {
        match action {
            Action::Seed { slot, hash } => Ok(self
                .chain
                .set_storage_at(crate::reserve::CHANNEL_RESERVE, slot.0, hash.0)
                .await?),
            Action::Grant { token, owner } => {
                crate::reserve::layout::grant_allowance(&self.chain, &format!("{token:#x}"), *owner)
                    .await
            }
        }
    }

    /// Lets a new expiring-nonce transaction in; one already mined keeps
    /// its lane, so resending it stays a no-op.
    async fn reopen_expiring_lane(&self, expiring: &Expiring) -> Result<(), DevnetError> {
        if self.mined(expiring.tx_hash).await {
            return Ok(());
        }
        let slot = quirks::expiring_lane_slot(expiring.sender);
        Ok(self
            .chain
            .set_storage_at(quirks::NONCE_PRECOMPILE, slot.0, [0; 32])
            .await?)
    }

    async fn mined(&self, tx_hash: alloy::primitives::B256) -> bool {
        self.chain
            .call::<Value>(
                "eth_getTransactionReceipt",
                serde_json::json!([format!("{tx_hash:#x}")]),
            )
            .await
            .is_ok_and(|receipt| !receipt.is_null())
    }

    /// anvil mines right after accepting; the next expiring transaction
    /// must not be let in before this one has used the lane.
    async fn await_mined(&self, tx_hash: alloy::primitives::B256) {
        let started = Instant::now();
        while !self.mined(tx_hash).await && started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The request objects of a single or batch JSON-RPC message.
fn requests(message: &mut Value) -> Vec<&mut Value> {
    match message {
        Value::Array(batch) => batch.iter_mut().filter(|r| r.is_object()).collect(),
        single @ Value::Object(_) => vec![single],
        _ => Vec::new(),
    }
}

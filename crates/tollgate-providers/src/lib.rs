//! Upstream AI providers: forwarding to real APIs (or an in-process router)
//! and translating between their formats.
//!
//! This crate knows nothing about payments: it receives a request that has
//! already been paid for (or is free) and returns the upstream's response.
#![forbid(unsafe_code)]

pub mod anthropic;
mod forward;
mod headers;
pub mod multipart;
pub mod pool_affinity;

pub use forward::{
    DEFAULT_ANTHROPIC_VERSION, ForwardError, Protocol, Upstream, UpstreamKind, UpstreamTimeouts,
};
pub use headers::{forwardable, is_hop_by_hop, returnable, strip_client_credentials};

//! End-to-end tests: the gateway on a real local Tempo chain, driven over HTTP.
//! One test binary (one link, one copy of the gateway on disk, instead of one
//! per file); cargo-nextest still runs every test in a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod charge_flow;
mod charge_pending;
mod claude_fidelity;
mod claude_routes;
mod dashboard;
mod discovery;
mod faults;
mod instances;
mod mppx_interop;
mod mppx_session;
mod observability;
mod openai_python;
mod openai_routes;
mod pipeline;
mod plan_endpoint;
mod protocol_edges;
mod session_flow;
mod session_v2;

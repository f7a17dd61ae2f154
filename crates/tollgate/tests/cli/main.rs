//! Tests of the `tollgate` binary and its subcommands (serve, pay, channels,
//! report, devnet), run as child processes. One test binary instead of one per
//! file; cargo-nextest still runs every test in a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../../../tollgate-e2e/tests/common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod agent_frameworks;
mod channels_cli;
mod crash;
mod demo;
mod devnet_lifecycle;
mod doc_examples;
mod instances_crash;
mod pay_charge;
mod pay_concurrent;
mod pay_mppx_server;
mod pay_proxy;
mod pay_session;
mod report_cli;

//! `tollgate channels`: the operator's view of session channels, and manual
//! settle/close. Works beside running gateways (same store).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use tollgate_ledger::{ChannelRecord, ChannelStatus, Ledger};
use tollgate_payments::session::SessionGate;
use tollgate_server::Config;

#[derive(Subcommand)]
pub enum ChannelsCommand {
    /// List channels with their accounting.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Settle what was spent on chain (one channel, or every one that owes).
    Settle {
        /// Channel id (0x…); all channels with unsettled spend when omitted.
        channel: Option<String>,
    },
    /// Close a channel: capture what is owed, refund the rest to the payer.
    Close { channel: String },
}

pub async fn run(config_path: &Path, command: ChannelsCommand) -> anyhow::Result<()> {
    let config =
        Config::load(config_path).with_context(|| format!("loading {}", config_path.display()))?;
    // Its own instance: it takes no holds, and releases nobody's.
    let ledger: Arc<dyn Ledger> = tollgate_server::open_store(&config).await?;
    let Some(sessions) = tollgate_server::session_gate(&config, Arc::clone(&ledger))? else {
        bail!("this config has no [session] section");
    };
    match command {
        ChannelsCommand::List { json } => list(&sessions, json).await,
        ChannelsCommand::Settle { channel } => settle(&sessions, channel).await,
        ChannelsCommand::Close { channel } => {
            let id = channel
                .parse()
                .context("channel id must be 0x-hex bytes32")?;
            let applied = sessions.close_channel(id, None).await?;
            println!(
                "closed {}: captured {}, tx {}",
                applied.channel.channel_id,
                applied.channel.settled,
                applied.tx_hash.unwrap_or_default()
            );
            Ok(())
        }
    }
}

async fn list(sessions: &SessionGate, json: bool) -> anyhow::Result<()> {
    let channels = sessions.channels().await?;
    if json {
        let rows: Vec<_> = channels.iter().map(row_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<66}  {:<9}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}",
        "channel", "status", "deposit", "accepted", "spent", "settled", "reserved"
    );
    for c in &channels {
        println!(
            "{:<66}  {:<9}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}{}",
            c.channel_id,
            status(c),
            c.deposit,
            c.accepted,
            c.spent,
            c.settled,
            c.reserved,
            if c.inflight.is_some() {
                "  (settlement in flight)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn status(channel: &ChannelRecord) -> &'static str {
    match channel.status {
        ChannelStatus::Open if channel.close_requested_at != 0 => "closing*",
        other => other.as_str(),
    }
}

fn row_json(c: &ChannelRecord) -> serde_json::Value {
    serde_json::json!({
        "channelId": c.channel_id,
        "status": status(c),
        "deposit": c.deposit.to_string(),
        "acceptedCumulative": c.accepted.to_string(),
        "spent": c.spent.to_string(),
        "settled": c.settled.to_string(),
        "reserved": c.reserved.to_string(),
        "unsettled": c.unsettled().to_string(),
        "units": c.units,
        "closeRequestedAt": c.close_requested_at,
        "settlementInFlight": c.inflight.is_some(),
    })
}

async fn settle(sessions: &SessionGate, channel: Option<String>) -> anyhow::Result<()> {
    let reconciled = sessions.reconcile().await?;
    if reconciled > 0 {
        println!("reconciled {reconciled} settlement(s) left in flight");
    }
    let targets: Vec<ChannelRecord> = match channel {
        Some(id) => sessions
            .channels()
            .await?
            .into_iter()
            .filter(|c| c.channel_id.eq_ignore_ascii_case(&id))
            .collect(),
        None => sessions
            .channels()
            .await?
            .into_iter()
            .filter(|c| c.status != ChannelStatus::Finalized && c.unsettled() > 0)
            .collect(),
    };
    if targets.is_empty() {
        println!("nothing to settle");
    }
    for c in targets {
        match sessions.submit_settlement(&c.channel_id, false).await? {
            Some(tx) => println!("settled {}: tx {tx:#x}", c.channel_id),
            None => println!(
                "{}: no voucher at or below spent to settle with",
                c.channel_id
            ),
        }
    }
    Ok(())
}

//! `close`: the client's final voucher must cover `max(spent, settled)`;
//! in-flight requests get a moment to commit; then the channel is closed on
//! chain capturing exactly what is owed.

use std::time::Duration;

use alloy::primitives::B256;
use tollgate_ledger::{ChannelStatus, LedgerError, StoredVoucher, VoucherRefusal};

use super::accept::check_signature;
use super::chain::Protocol;
use super::payload::SignedVoucher;
use super::problems::{not_found, refusal_problem, store_failure};
use super::{Applied, Known, SessionGate, hex_signature};
use crate::problem::{PaymentProblem, ProblemKind};

impl SessionGate {
    /// Cooperative close with the client's voucher: captures
    /// `max(spent, settled)` and refunds the rest of the deposit.
    pub async fn close(
        &self,
        client_voucher: Option<&SignedVoucher>,
    ) -> Result<Applied, PaymentProblem> {
        match client_voucher {
            Some(v) => self.close_as(v, None).await,
            None => Err(super::problems::invalid_payload("close needs a voucher")),
        }
    }

    pub(super) async fn close_as(
        &self,
        voucher: &SignedVoucher,
        offered: Option<Protocol>,
    ) -> Result<Applied, PaymentProblem> {
        let known = self
            .voucher_channel(voucher.channel_id, voucher.descriptor.as_ref(), offered)
            .await?;
        self.close_known(known, Some(voucher)).await
    }

    /// Closes `channel_id` (the operator's close, without a client voucher,
    /// or with one).
    pub async fn close_channel(
        &self,
        channel_id: B256,
        client_voucher: Option<&SignedVoucher>,
    ) -> Result<Applied, PaymentProblem> {
        match client_voucher {
            Some(v) => self.close_as(v, None).await,
            None => {
                let known = self.known_ctx(channel_id).await?;
                self.close_known(known, None).await
            }
        }
    }

    async fn close_known(
        &self,
        known: Known,
        client_voucher: Option<&SignedVoucher>,
    ) -> Result<Applied, PaymentProblem> {
        let channel = &known.record;
        if channel.status == ChannelStatus::Finalized {
            return Err(refusal_problem(VoucherRefusal::Finalized));
        }
        let id = channel.channel_id.clone();
        if let Some(voucher) = client_voucher {
            let chain = self.chain_for(known.protocol)?;
            check_signature(
                known.protocol,
                chain.escrow(),
                chain.chain_id(),
                voucher,
                known.signer,
            )?;
            let owed = channel.spent.max(channel.settled);
            if voucher.cumulative < owed {
                return Err(PaymentProblem::new(
                    ProblemKind::SessionDeltaTooSmall,
                    "the close voucher does not cover what was spent",
                )
                .with("channelId", id.clone())
                .with("spent", channel.spent.to_string()));
            }
            if voucher.cumulative > channel.deposit {
                return Err(refusal_problem(VoucherRefusal::ExceedsDeposit {
                    deposit: channel.deposit,
                }));
            }
            // Keep the close voucher: it may be the one that covers `spent`
            // exactly, and when it is the highest it is accepted as such.
            self.store_any_voucher(&id, voucher)
                .await
                .map_err(store_failure)?;
            let _ = self
                .ledger
                .accept_voucher(
                    &id,
                    &StoredVoucher {
                        cumulative: voucher.cumulative,
                        signature: hex_signature(&voucher.signature),
                    },
                    0,
                )
                .await
                .map_err(store_failure)?;
        }
        self.ledger.mark_closing(&id).await.map_err(store_failure)?;
        self.wait_for_in_flight(&id).await;
        let tx_hash = self.submit_settlement(&id, true).await?;
        let channel = self
            .ledger
            .channel(&id)
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)?;
        tracing::info!(protocol = known.protocol.as_str(), "session channel closed");
        Ok(Applied {
            channel,
            tx_hash: tx_hash.map(|h| format!("{h:#x}")),
            seen: false,
        })
    }

    /// Stores a voucher below the highest too (a close voucher for exactly
    /// `spent`), so a close can capture it.
    async fn store_any_voucher(
        &self,
        channel_id: &str,
        voucher: &SignedVoucher,
    ) -> Result<(), LedgerError> {
        self.ledger
            .store_voucher(
                channel_id,
                &StoredVoucher {
                    cumulative: voucher.cumulative,
                    signature: hex_signature(&voucher.signature),
                },
            )
            .await
    }

    /// Requests still holding a reservation get a moment to commit before
    /// a close captures `spent`.
    async fn wait_for_in_flight(&self, channel_id: &str) {
        for _ in 0..50 {
            match self.ledger.channel(channel_id).await {
                Ok(Some(c)) if c.reserved > 0 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => return,
            }
        }
    }
}

//! Settlement by the worker (and by close): what is owed goes on chain,
//! recorded before it is broadcast so a crash in between is reconciled.
//! The capture rule is `max(spent, settled)`.

use alloy::primitives::{B256, Bytes};
use tollgate_ledger::InFlight;

use super::chain::{ChainError, ChannelState, SettlementCall};
use super::problems::{chain_problem, corrupt, not_found, store_failure};
use super::{Known, SessionGate, facts};
use crate::problem::{PaymentProblem, ProblemKind};

impl SessionGate {
    /// Settles on chain what is owed: `settle` (channel stays open) or
    /// `close`. Records the signed transaction before broadcasting it, so a
    /// crash in between is reconciled. Returns the transaction hash, or
    /// `None` when nothing was owed and the channel stays open.
    pub async fn submit_settlement(
        &self,
        channel_id: &str,
        close: bool,
    ) -> Result<Option<B256>, PaymentProblem> {
        let record = self
            .ledger
            .channel(channel_id)
            .await
            .map_err(store_failure)?
            .ok_or_else(not_found)?;
        let known = Self::ctx(record)?;
        let chain = self.chain_for(known.protocol)?;
        let channel = &known.record;
        let owed = channel.spent.max(channel.settled);
        // A close (ours, or a forced one the payer started on chain) must
        // capture what is owed: the smallest voucher covering it. A routine
        // settlement never takes more than was spent.
        let must_cover = close || channel.close_requested_at != 0;
        let voucher = if must_cover {
            match self
                .ledger
                .voucher_covering(channel_id, owed)
                .await
                .map_err(store_failure)?
            {
                Some(v) => Some(v),
                None if owed == channel.settled => None,
                None => {
                    return Err(PaymentProblem::new(
                        ProblemKind::SessionDeltaTooSmall,
                        "no voucher covers what was spent",
                    ));
                }
            }
        } else {
            self.ledger
                .voucher_within(channel_id, channel.spent)
                .await
                .map_err(store_failure)?
        }
        .filter(|v| close || v.cumulative > channel.settled);
        if !close && voucher.is_none() {
            return Ok(None);
        }
        let (cumulative, signature) = match &voucher {
            Some(v) if v.cumulative > channel.settled => (
                v.cumulative,
                v.signature.parse::<Bytes>().unwrap_or_default(),
            ),
            // Nothing above what is settled: close refunds the rest.
            _ => (channel.settled, Bytes::new()),
        };
        // v1 captures the voucher's amount (the smallest covering `owed`);
        // v2 names the capture, exactly what is owed.
        let capture = owed.min(cumulative);
        let id: B256 = channel_id.parse().map_err(|_| corrupt("channel id"))?;
        let call = SettlementCall {
            close,
            channel_id: id,
            descriptor: known.descriptor,
            cumulative,
            capture,
            signature,
        };
        let (tx_hash, tx) = chain.sign_settlement(&call).await.map_err(chain_problem)?;
        let in_flight = InFlight {
            kind: if close { "close" } else { "settle" }.into(),
            tx_hash: format!("{tx_hash:#x}"),
            amount: if close { capture } else { cumulative },
            since: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        self.ledger
            .begin_settlement(channel_id, &in_flight)
            .await
            .map_err(store_failure)?;
        match chain.broadcast(&tx).await {
            Ok(_) => {}
            Err(ChainError::Refused(reason)) => {
                self.ledger
                    .abandon_settlement(channel_id)
                    .await
                    .map_err(store_failure)?;
                tracing::warn!(kind = %in_flight.kind, reason = %reason, "settlement refused by the chain");
                return Err(PaymentProblem::new(
                    ProblemKind::VerificationFailed,
                    "the settlement transaction was refused",
                ));
            }
            // Outcome unknown: leave the marker for reconciliation.
            Err(e) => return Err(chain_problem(e)),
        }
        let (settled, finalized) = self.after_settlement(&known, &in_flight).await?;
        self.ledger
            .finish_settlement(channel_id, settled, finalized)
            .await
            .map_err(store_failure)?;
        Ok(Some(tx_hash))
    }

    /// What the chain holds after a settlement landed. A closed v2 channel
    /// is deleted, so it reads as absent: settled is what the close captured.
    async fn after_settlement(
        &self,
        known: &Known,
        flight: &InFlight,
    ) -> Result<(u128, bool), PaymentProblem> {
        let on_chain = self.read_known(known).await?;
        Ok(if on_chain.exists {
            (on_chain.settled, on_chain.finalized)
        } else {
            (flight.amount.max(known.record.settled), true)
        })
    }

    async fn read_known(&self, known: &Known) -> Result<ChannelState, PaymentProblem> {
        let id: B256 = known
            .record
            .channel_id
            .parse()
            .map_err(|_| corrupt("channel id"))?;
        self.chain_for(known.protocol)?
            .channel(id, known.descriptor.as_ref())
            .await
            .map_err(chain_problem)
    }

    /// After a restart (or an RPC failure mid-settlement): asks the chain
    /// what became of every settlement in flight and records it.
    pub async fn reconcile(&self) -> Result<usize, PaymentProblem> {
        let channels = self.ledger.channels().await.map_err(store_failure)?;
        let mut done = 0;
        for record in channels.into_iter().filter(|c| c.inflight.is_some()) {
            let Some(flight) = record.inflight.clone() else {
                continue;
            };
            let known = Self::ctx(record)?;
            let chain = self.chain_for(known.protocol)?;
            let tx: B256 = flight.tx_hash.parse().unwrap_or_default();
            let status = chain.receipt_status(tx).await.map_err(chain_problem)?;
            let id = &known.record.channel_id;
            match status {
                Some(_) => {
                    let (settled, finalized) = self.after_settlement(&known, &flight).await?;
                    self.ledger
                        .finish_settlement(id, settled, finalized)
                        .await
                        .map_err(store_failure)?;
                }
                // Never reached the chain: forget it, the worker retries.
                None => {
                    self.ledger
                        .abandon_settlement(id)
                        .await
                        .map_err(store_failure)?;
                    let on_chain = self.read_known(&known).await?;
                    if on_chain.exists {
                        self.ledger
                            .refresh_channel(id, facts(&on_chain))
                            .await
                            .map_err(store_failure)?;
                    }
                }
            }
            done += 1;
        }
        Ok(done)
    }
}

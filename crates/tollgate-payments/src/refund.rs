//! Refunding charges whose answer was not delivered.
//!
//! A charge settled before the upstream answered (`payments.settle =
//! "before_upstream"`, or a stream paid at its first event) is refunded on
//! chain when the answer does not reach the payer: in full when nothing was
//! delivered, the undelivered part when a stream broke off. A refund is a
//! TIP-20 `transferWithMemo` from the recipient (operator-signed) to the
//! account the charge came from, with the charge's transaction hash as memo.
//!
//! Crash safety mirrors settlements: the refund is recorded (owed) before
//! anything is signed, its signed bytes are recorded before they are
//! broadcast, and after a restart the very same bytes are sent again — a
//! fresh 2D nonce lane used once, so a refund can never pay twice. Without
//! a key a refund stays owed, in the ledger and the logs.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use serde_json::Value;
use tempo_alloy::contracts::precompiles::ITIP20;
use tollgate_ledger::{Ledger, LedgerError, RefundRecord, RefundState};

use crate::session::ChainError;
use crate::session::rpc::{Rpc, succeeded};

/// Gas for a TIP-20 transfer on a fresh nonce lane, with room to spare.
const REFUND_GAS: u64 = 1_000_000;

/// Where refunds are paid from and how they are signed.
#[derive(Clone)]
pub struct RefundSettings {
    pub rpc_url: String,
    pub rpc_timeout: Duration,
    pub chain_id: u64,
    pub currency: Address,
    /// The account charges pay into (refunds come from it).
    pub recipient: Address,
    /// The recipient's key; without it refunds are recorded as owed.
    pub signer: Option<PrivateKeySigner>,
    /// Token the refund transactions pay fees in (the node's default for
    /// the recipient when unset).
    pub fee_token: Option<Address>,
}

/// Why a charge is refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundReason {
    /// Nothing was delivered (an upstream failure, or the client left
    /// before the answer): the whole charge.
    Undelivered,
    /// A stream broke off: what it did not deliver.
    Partial,
}

impl RefundReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undelivered => "undelivered",
            Self::Partial => "partial",
        }
    }
}

/// One charge to refund.
#[derive(Debug, Clone)]
pub struct RefundOrder {
    pub challenge_id: String,
    pub route: String,
    /// The charge's transaction hash.
    pub charge_reference: String,
    /// What the charge paid (to find its transfer on chain).
    pub charged: u128,
    /// What is refunded (at most `charged`).
    pub amount: u128,
    pub reason: RefundReason,
}

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("chain unreachable: {0}")]
    Unavailable(String),
    #[error("refused by the chain: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<ChainError> for RefundError {
    fn from(error: ChainError) -> Self {
        match error {
            ChainError::Unavailable(reason) => Self::Unavailable(reason),
            ChainError::Refused(reason) => Self::Refused(reason),
            ChainError::Invalid(reason) => Self::Invalid(reason),
        }
    }
}

/// Signs, records and sends refunds.
pub struct Refunds {
    settings: RefundSettings,
    /// The chain, with the refund key as its operator.
    rpc: Rpc,
    ledger: Arc<dyn Ledger>,
}

impl Refunds {
    pub fn new(settings: RefundSettings, ledger: Arc<dyn Ledger>) -> Result<Self, String> {
        Ok(Self {
            rpc: Rpc::new(
                &settings.rpc_url,
                settings.chain_id,
                settings.rpc_timeout,
                settings.signer.clone(),
                settings.fee_token,
            )?,
            settings,
            ledger,
        })
    }

    /// Whether refunds are sent (else only recorded as owed).
    pub fn can_sign(&self) -> bool {
        self.settings.signer.is_some()
    }

    /// Refunds `order` in the background.
    pub fn spawn(self: &Arc<Self>, order: RefundOrder) {
        let refunds = Arc::clone(self);
        let spawned = tokio::runtime::Handle::try_current().map(|runtime| {
            runtime.spawn(async move {
                if let Err(e) = refunds.refund(order).await {
                    tracing::error!(error = %e, "refund not completed; it is retried from the ledger");
                }
            })
        });
        if spawned.is_err() {
            tracing::error!("a refund could not be started: no runtime");
        }
    }

    /// Records `order` (once per charge) and sends it. Returns where it
    /// stands; a refund already recorded for this charge is left alone.
    pub async fn refund(&self, order: RefundOrder) -> Result<RefundState, RefundError> {
        if order.amount == 0 {
            return Ok(RefundState::Refunded);
        }
        // Recorded first, before any RPC: from here on it cannot be lost.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let record = RefundRecord {
            challenge_id: order.challenge_id.clone(),
            route: order.route.clone(),
            charge_reference: order.charge_reference.clone(),
            payer: None,
            amount: order.amount.min(order.charged),
            currency: format!("{:#x}", self.settings.currency),
            reason: order.reason.as_str().to_owned(),
            state: RefundState::Owed,
            tx_hash: None,
            signed_tx: None,
            created_at: now,
            updated_at: now,
        };
        if !self.ledger.record_refund(&record).await? {
            tracing::info!(route = %order.route, "this charge already has a refund");
            let existing = self.ledger.refund(&order.challenge_id).await?;
            return Ok(existing.map_or(RefundState::Owed, |r| r.state));
        }
        tracing::info!(
            route = %order.route,
            amount = %record.amount,
            reason = order.reason.as_str(),
            "charge refund owed"
        );
        self.advance(record).await
    }

    /// Moves every refund that is not confirmed one step on: fills in a
    /// missing payer, signs and sends an owed one, confirms or resends a
    /// sent one (the same bytes). Returns how many are still open.
    pub async fn reconcile(&self) -> Result<usize, RefundError> {
        let mut open = 0;
        for record in self.ledger.open_refunds().await? {
            match self.advance(record).await {
                Ok(RefundState::Refunded) => {}
                Ok(_) => open += 1,
                Err(e) => {
                    open += 1;
                    tracing::warn!(error = %e, "refund still open");
                }
            }
        }
        Ok(open)
    }

    async fn advance(&self, mut record: RefundRecord) -> Result<RefundState, RefundError> {
        if record.state == RefundState::Owed {
            if record.payer.is_none() {
                let Some(payer) = self
                    .payer_of(&record.charge_reference, record.amount)
                    .await?
                else {
                    return Err(RefundError::Invalid(
                        "the charge's transfer is not on chain".into(),
                    ));
                };
                let payer = format!("{payer:#x}");
                self.ledger
                    .set_refund_payer(&record.challenge_id, &payer)
                    .await?;
                record.payer = Some(payer);
            }
            if self.settings.signer.is_none() {
                tracing::warn!(
                    route = %record.route,
                    amount = %record.amount,
                    "a refund is owed but no refund key is configured (payments.refund_key)"
                );
                return Ok(RefundState::Owed);
            }
            let payer: Address = record
                .payer
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| RefundError::Invalid("stored payer is not an address".into()))?;
            let (tx_hash, signed) = self
                .sign_transfer(payer, record.amount, &record.charge_reference)
                .await?;
            let signed_hex = format!("0x{}", alloy::hex::encode(&signed));
            let tx_hash = format!("{tx_hash:#x}");
            if !self
                .ledger
                .refund_signed(&record.challenge_id, &tx_hash, &signed_hex)
                .await?
            {
                // Someone else signed it meanwhile: theirs stands.
                return Ok(RefundState::Sent);
            }
            record.tx_hash = Some(tx_hash);
            record.signed_tx = Some(signed_hex);
            record.state = RefundState::Sent;
        }
        self.send(&record).await
    }

    /// Sends a signed refund (again) and records what became of it.
    async fn send(&self, record: &RefundRecord) -> Result<RefundState, RefundError> {
        let tx_hash: B256 = record
            .tx_hash
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| RefundError::Invalid("stored refund hash".into()))?;
        match self.receipt_status(tx_hash).await? {
            Some(true) => return self.confirmed(record).await,
            Some(false) => return self.reverted(record).await,
            None => {}
        }
        let signed = record
            .signed_tx
            .as_deref()
            .and_then(|hex| alloy::hex::decode(hex).ok())
            .ok_or_else(|| RefundError::Invalid("stored refund transaction".into()))?;
        match self.broadcast(&signed).await {
            Ok(true) => self.confirmed(record).await,
            Ok(false) => self.reverted(record).await,
            // Outcome unknown, or the node refused these bytes now: they
            // stay recorded and are sent again (they can land only once).
            Err(e) => Err(e),
        }
    }

    async fn confirmed(&self, record: &RefundRecord) -> Result<RefundState, RefundError> {
        self.ledger.refund_confirmed(&record.challenge_id).await?;
        tracing::info!(route = %record.route, amount = %record.amount, "charge refunded on chain");
        Ok(RefundState::Refunded)
    }

    async fn reverted(&self, record: &RefundRecord) -> Result<RefundState, RefundError> {
        // A mined, reverted transfer spent its nonce and moved nothing.
        self.ledger.refund_reverted(&record.challenge_id).await?;
        tracing::warn!(route = %record.route, "refund transfer reverted; it stays owed");
        Ok(RefundState::Owed)
    }

    /// Who paid `charged` to the recipient in transaction `reference`: the
    /// sender of its TIP-20 transfer (also when a sponsor paid the fees).
    async fn payer_of(
        &self,
        reference: &str,
        charged: u128,
    ) -> Result<Option<Address>, RefundError> {
        let Ok(hash) = reference.parse::<B256>() else {
            return Ok(None);
        };
        let receipt = self.rpc.receipt(hash).await?;
        let logs = receipt
            .as_ref()
            .and_then(|r| r.get("logs"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(transfer_sender(
            &logs,
            self.settings.currency,
            self.settings.recipient,
            charged,
        ))
    }

    async fn sign_transfer(
        &self,
        to: Address,
        amount: u128,
        charge_reference: &str,
    ) -> Result<(B256, Vec<u8>), RefundError> {
        let memo = charge_reference
            .parse::<B256>()
            .unwrap_or_else(|_| keccak256(charge_reference.as_bytes()));
        let data = ITIP20::transferWithMemoCall {
            to,
            amount: U256::from(amount),
            memo,
        }
        .abi_encode();
        // A fresh 2D nonce lane, used once: the signed bytes can land once.
        Ok(self
            .rpc
            .sign_call_with(self.settings.currency, data, REFUND_GAS, 2)
            .await?)
    }

    /// Broadcasts and waits for the receipt: `true` succeeded, `false`
    /// reverted.
    async fn broadcast(&self, signed: &[u8]) -> Result<bool, RefundError> {
        Ok(succeeded(&self.rpc.send_raw(signed).await?))
    }

    async fn receipt_status(&self, tx_hash: B256) -> Result<Option<bool>, RefundError> {
        Ok(self.rpc.receipt_status(tx_hash).await?)
    }
}

fn transfer_sender(logs: &[Value], token: Address, to: Address, amount: u128) -> Option<Address> {
    let signatures = [
        ITIP20::Transfer::SIGNATURE_HASH,
        ITIP20::TransferWithMemo::SIGNATURE_HASH,
    ];
    let transfers: Vec<(Address, U256)> = logs
        .iter()
        .filter_map(|log| {
            let address: Address = log.get("address")?.as_str()?.parse().ok()?;
            let topics: Vec<B256> = log
                .get("topics")?
                .as_array()?
                .iter()
                .filter_map(|t| t.as_str()?.parse().ok())
                .collect();
            let data = alloy::hex::decode(log.get("data")?.as_str()?).ok()?;
            let is_transfer = topics.first().is_some_and(|t| signatures.contains(t));
            if address != token || !is_transfer || topics.len() < 3 || data.len() < 32 {
                return None;
            }
            let from = Address::from_word(topics[1]);
            let recipient = Address::from_word(topics[2]);
            (recipient == to).then(|| (from, U256::from_be_slice(&data[..32])))
        })
        .collect();
    transfers
        .iter()
        .find(|(_, value)| *value == U256::from(amount))
        .or_else(|| transfers.first())
        .map(|(from, _)| *from)
}

/// A settled charge that is refunded when dropped, unless kept: the drop
/// is the failure path (an upstream error, a client that went away, an
/// early return), so no path can keep money for an answer not delivered.
pub struct Refundable {
    armed: Option<(Arc<Refunds>, RefundOrder)>,
}

impl std::fmt::Debug for Refundable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refundable")
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

impl Refundable {
    pub(crate) fn new(refunds: Arc<Refunds>, order: RefundOrder) -> Self {
        Self {
            armed: Some((refunds, order)),
        }
    }

    /// What the charge paid.
    pub fn charged(&self) -> u128 {
        self.armed.as_ref().map_or(0, |(_, order)| order.charged)
    }

    /// The answer was delivered: the charge stands in full.
    pub fn keep(mut self) {
        self.armed = None;
    }

    /// Gives `amount` back (a stream that broke off), keeping the rest.
    pub fn refund_part(mut self, amount: u128) {
        if let Some((refunds, order)) = self.armed.take()
            && amount > 0
        {
            refunds.spawn(RefundOrder {
                amount: amount.min(order.charged),
                reason: if amount >= order.charged {
                    RefundReason::Undelivered
                } else {
                    RefundReason::Partial
                },
                ..order
            });
        }
    }
}

impl Drop for Refundable {
    fn drop(&mut self) {
        if let Some((refunds, order)) = self.armed.take() {
            refunds.spawn(RefundOrder {
                amount: order.charged,
                reason: RefundReason::Undelivered,
                ..order
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn word(address: Address) -> String {
        format!("{:#x}", address.into_word())
    }

    #[test]
    fn the_payer_is_the_sender_of_the_transfer_to_the_recipient() {
        let token: Address = "0x20c0000000000000000000000000000000000000"
            .parse()
            .unwrap();
        let recipient = Address::repeat_byte(0x11);
        let payer = Address::repeat_byte(0x22);
        let sponsor = Address::repeat_byte(0x33);
        let amount = |v: u128| {
            format!(
                "0x{}",
                alloy::hex::encode(U256::from(v).to_be_bytes::<32>())
            )
        };
        let logs = vec![
            // A fee transfer by someone else, to someone else.
            json!({"address": format!("{token:#x}"), "topics": [format!("{:#x}", ITIP20::Transfer::SIGNATURE_HASH), word(sponsor), word(Address::repeat_byte(0x44))], "data": amount(7)}),
            json!({"address": format!("{token:#x}"), "topics": [format!("{:#x}", ITIP20::Transfer::SIGNATURE_HASH), word(payer), word(recipient)], "data": amount(4_037)}),
            json!({"address": format!("{token:#x}"), "topics": [format!("{:#x}", ITIP20::TransferWithMemo::SIGNATURE_HASH), word(payer), word(recipient), format!("{:#x}", B256::repeat_byte(9))], "data": amount(4_037)}),
        ];
        assert_eq!(transfer_sender(&logs, token, recipient, 4_037), Some(payer));
        assert_eq!(transfer_sender(&logs, token, recipient, 1), Some(payer));
        assert_eq!(transfer_sender(&logs, token, sponsor, 4_037), None);
        assert_eq!(
            transfer_sender(&logs, Address::repeat_byte(0x55), recipient, 4_037),
            None
        );
        assert_eq!(transfer_sender(&[], token, recipient, 4_037), None);
    }
}

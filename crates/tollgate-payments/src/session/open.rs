//! `open`: the client's signed open transaction, checked offline (so a bad
//! credential costs nobody gas), broadcast, confirmed on chain, recorded.

use alloy::primitives::{Address, B256};
use tollgate_ledger::{ChannelRecord, ChannelStatus, StoredVoucher};

use super::accept::check_signature;
use super::chain::{ChainError, ChannelState, Protocol, SessionChain};
use super::payload::OpenPayload;
use super::problems::{chain_problem, invalid_payload, store_failure, v2_problem};
use super::{Applied, SessionGate, descriptor_json, escrow, hex_signature};
use crate::problem::{PaymentProblem, ProblemKind};
use crate::session_v2::{self, Descriptor, Expected};

/// What an open establishes before it is broadcast.
struct Checked {
    payer: Address,
    signer: Address,
    deposit: u128,
}

impl SessionGate {
    /// The protocol an open speaks: a descriptor makes it v2.
    fn open_protocol(open: &OpenPayload) -> Protocol {
        if open.descriptor.is_some() {
            Protocol::V2
        } else {
            Protocol::V1
        }
    }

    /// The payer an open names (checked against the transaction later).
    pub(super) fn open_payer(&self, open: &OpenPayload) -> Result<Address, PaymentProblem> {
        match &open.descriptor {
            Some(d) => Ok(d.payer),
            None => {
                let chain = self.chain_for(Protocol::V1)?;
                escrow::decode_open(&open.transaction, chain.escrow(), chain.chain_id())
                    .map(|d| d.payer)
                    .map_err(chain_problem)
            }
        }
    }

    pub(super) async fn open(
        &self,
        open: &OpenPayload,
        required: u128,
        offered: Option<Protocol>,
    ) -> Result<Applied, PaymentProblem> {
        let protocol = Self::open_protocol(open);
        if let Some(p) = offered
            && p != protocol
        {
            return Err(PaymentProblem::new(
                ProblemKind::InvalidChallenge,
                format!("the challenge is for session protocol {p}, the open is {protocol}"),
            ));
        }
        let chain = self.chain_for(protocol)?;
        let channel_id = open.voucher.channel_id;
        if self.known(channel_id).await?.is_some() {
            // A retried open: the channel is ours already; its voucher counts
            // like any other.
            return Ok(Applied {
                channel: self.accept_as(&open.voucher, Some(protocol)).await?,
                tx_hash: None,
                seen: false,
            });
        }
        let checked = match &open.descriptor {
            Some(d) => self.check_open_v2(chain, open, d)?,
            None => self.check_open_v1(chain, open)?,
        };
        if checked.deposit < required {
            return Err(PaymentProblem::new(
                ProblemKind::SessionInsufficientBalance,
                "the deposit does not cover this request",
            )
            .with("requiredTopUp", (required - checked.deposit).to_string()));
        }
        check_signature(
            protocol,
            chain.escrow(),
            chain.chain_id(),
            &open.voucher,
            checked.signer,
        )?;
        if open.voucher.cumulative > checked.deposit {
            return Err(PaymentProblem::new(
                ProblemKind::SessionAmountExceedsDeposit,
                "the initial voucher exceeds the deposit",
            ));
        }

        let broadcast = chain.broadcast(&open.transaction).await;
        let on_chain = chain
            .channel(channel_id, open.descriptor.as_ref())
            .await
            .map_err(chain_problem)?;
        let tx_hash = match broadcast {
            Ok(confirmed) => Some(format!("{:#x}", confirmed.tx_hash)),
            // Refused because it already landed (a retry after we crashed)?
            Err(ChainError::Refused(_)) if on_chain.exists => None,
            Err(e) => return Err(chain_problem(e)),
        };
        self.check_opened(&on_chain, &checked)?;
        let record = self.new_record(protocol, chain, channel_id, &checked, open, &on_chain);
        let initial = StoredVoucher {
            cumulative: open.voucher.cumulative,
            signature: hex_signature(&open.voucher.signature),
        };
        let channel = self
            .ledger
            .open_channel(&record, (initial.cumulative > 0).then_some(&initial))
            .await
            .map_err(store_failure)?;
        tracing::info!(protocol = protocol.as_str(), "session channel opened");
        self.ring(&channel.channel_id);
        Ok(Applied {
            channel,
            tx_hash,
            seen: false,
        })
    }

    fn check_open_v1(
        &self,
        chain: &dyn SessionChain,
        open: &OpenPayload,
    ) -> Result<Checked, PaymentProblem> {
        let decoded = escrow::decode_open(&open.transaction, chain.escrow(), chain.chain_id())
            .map_err(chain_problem)?;
        if decoded.payee != self.settings.recipient {
            return Err(invalid_payload("open transaction pays someone else"));
        }
        if decoded.token != self.settings.currency {
            return Err(invalid_payload("open transaction deposits another token"));
        }
        let derived = mpp::tempo::compute_channel_id(
            decoded.payer,
            decoded.payee,
            decoded.token,
            decoded.salt,
            decoded.authorized_signer,
            chain.escrow(),
            chain.chain_id(),
        );
        if derived != open.voucher.channel_id {
            return Err(invalid_payload(
                "channelId does not match the open transaction",
            ));
        }
        let signer = if decoded.authorized_signer == Address::ZERO {
            decoded.payer
        } else {
            decoded.authorized_signer
        };
        Ok(Checked {
            payer: decoded.payer,
            signer,
            deposit: decoded.deposit,
        })
    }

    fn check_open_v2(
        &self,
        chain: &dyn SessionChain,
        open: &OpenPayload,
        descriptor: &Descriptor,
    ) -> Result<Checked, PaymentProblem> {
        if let Some(claimed) = open.authorized_signer
            && claimed != descriptor.authorized_signer
        {
            return Err(invalid_payload(
                "authorizedSigner differs from the descriptor's",
            ));
        }
        let expected = Expected {
            payee: self.settings.recipient,
            token: self.settings.currency,
            operator: Address::ZERO,
            escrow: chain.escrow(),
            chain_id: chain.chain_id(),
            channel_id: open.voucher.channel_id,
        };
        let opened = session_v2::verify_open_transaction(&open.transaction, descriptor, &expected)
            .map_err(v2_problem)?;
        Ok(Checked {
            payer: opened.payer,
            signer: opened.voucher_signer,
            deposit: opened.deposit,
        })
    }

    /// The channel the chain now holds must be the one we checked.
    fn check_opened(
        &self,
        on_chain: &ChannelState,
        checked: &Checked,
    ) -> Result<(), PaymentProblem> {
        if !on_chain.exists {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelNotFound,
                "the channel is not on chain after the open transaction",
            ));
        }
        if let Some(parties) = on_chain.parties
            && (parties.payee != self.settings.recipient
                || parties.token != self.settings.currency
                || parties.payer != checked.payer
                || parties.voucher_signer() != checked.signer)
        {
            return Err(invalid_payload("the channel on chain has other terms"));
        }
        if on_chain.finalized {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelFinalized,
                "the channel is closed",
            ));
        }
        if on_chain.close_requested_at != 0 {
            return Err(PaymentProblem::new(
                ProblemKind::SessionChannelFinalized,
                "the channel has a pending close request",
            ));
        }
        Ok(())
    }

    fn new_record(
        &self,
        protocol: Protocol,
        chain: &dyn SessionChain,
        channel_id: B256,
        checked: &Checked,
        open: &OpenPayload,
        on_chain: &ChannelState,
    ) -> ChannelRecord {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        ChannelRecord {
            channel_id: format!("{channel_id:#x}"),
            protocol: protocol.as_str().into(),
            escrow: format!("{:#x}", chain.escrow()),
            chain_id: chain.chain_id(),
            payer: format!("{:#x}", checked.payer),
            payee: format!("{:#x}", self.settings.recipient),
            token: format!("{:#x}", self.settings.currency),
            authorized_signer: format!("{:#x}", checked.signer),
            descriptor: open
                .descriptor
                .as_ref()
                .map(|d| descriptor_json(d).to_string()),
            deposit: on_chain.deposit,
            accepted: 0,
            spent: 0,
            reserved: 0,
            settled: on_chain.settled,
            units: 0,
            close_requested_at: on_chain.close_requested_at,
            status: ChannelStatus::Open,
            opened_at: now,
            updated_at: now,
            last_settled_at: None,
            inflight: None,
        }
    }
}

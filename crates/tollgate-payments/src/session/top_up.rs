//! `topUp`: the client's signed top-up, checked against the stored
//! channel, broadcast, and the grown deposit read back from the chain.

use alloy::primitives::U256;

use super::chain::Protocol;
use super::payload::TopUpPayload;
use super::problems::{chain_problem, invalid_payload};
use super::{Applied, SessionGate, escrow, reserve};
use crate::problem::{PaymentProblem, ProblemKind};

impl SessionGate {
    pub(super) async fn top_up(
        &self,
        top_up: &TopUpPayload,
        offered: Option<Protocol>,
    ) -> Result<Applied, PaymentProblem> {
        let known = self
            .voucher_channel(top_up.channel_id, top_up.descriptor.as_ref(), offered)
            .await?;
        let chain = self.chain_for(known.protocol)?;
        let (sender, amount) = match known.protocol {
            Protocol::V1 => {
                let (sender, channel_id, amount) =
                    escrow::decode_top_up(&top_up.transaction, chain.escrow(), chain.chain_id())
                        .map_err(chain_problem)?;
                if channel_id != top_up.channel_id {
                    return Err(invalid_payload("topUp transaction is for another channel"));
                }
                (sender, amount)
            }
            Protocol::V2 => {
                let (sender, descriptor, amount) =
                    reserve::decode_top_up(&top_up.transaction, chain.escrow(), chain.chain_id())
                        .map_err(chain_problem)?;
                if Some(&descriptor) != known.descriptor.as_ref() {
                    return Err(invalid_payload("topUp transaction is for another channel"));
                }
                (sender, U256::from(amount))
            }
        };
        if amount != U256::from(top_up.additional_deposit) {
            return Err(invalid_payload(
                "topUp transaction amount differs from additionalDeposit",
            ));
        }
        if format!("{sender:#x}") != known.record.payer {
            return Err(invalid_payload("topUp transaction is not from the payer"));
        }
        chain
            .broadcast(&top_up.transaction)
            .await
            .map_err(chain_problem)?;
        let channel = self.refresh_known(&known).await?;
        if channel.deposit < known.record.deposit + top_up.additional_deposit {
            return Err(PaymentProblem::new(
                ProblemKind::VerificationFailed,
                "the deposit did not grow by additionalDeposit",
            ));
        }
        self.ring(&channel.channel_id);
        Ok(Applied {
            channel,
            tx_hash: None,
            seen: false,
        })
    }
}

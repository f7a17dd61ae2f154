//! Spend safety: what the payer allows, checked before anything is signed.

use alloy::primitives::Address;

use crate::challenge::{Offer, OfferKind};
use crate::error::{Error, Result};

/// Limits on what the client pays. Empty allow-lists allow anything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Refuse a challenge whose `amount` (base units) is above this.
    pub max_amount: Option<u128>,
    /// Only pay these recipients (channel payees for sessions).
    pub allow_recipients: Vec<Address>,
    /// Only pay in these tokens.
    pub allow_tokens: Vec<Address>,
    /// Only deposit into these escrow contracts (sessions).
    pub allow_escrows: Vec<Address>,
    /// Only pay on this chain.
    pub chain_id: Option<u64>,
    /// Cap on a channel's total deposit (sessions). Without it the
    /// server's `suggestedDeposit` is used as is.
    pub max_deposit: Option<u128>,
    /// Authorize at most this much beyond what was spent with each
    /// request's voucher (sessions). A streamed response asks for the rest
    /// as it goes (`payment-need-voucher`); a non-streamed request whose
    /// worst case is above it is refused by the server. Default: the
    /// request's worst case.
    pub authorize: Option<u128>,
}

impl Policy {
    /// Checks an offer's terms. Called before any signing.
    pub fn check(&self, offer: &Offer) -> Result<()> {
        if offer.challenge.is_expired() {
            return Err(Error::Expired(
                offer
                    .challenge
                    .expires
                    .clone()
                    .unwrap_or_else(|| "?".to_owned()),
            ));
        }
        // A session's stream may ask for more than its challenge's amount
        // as it goes: the cap applies to what the request may cost in all.
        if let Some(max) = self.max_amount
            && offer.worst_case() > max
        {
            return Err(Error::Policy(format!(
                "the challenge asks for {} base units, above --max-amount {max}",
                offer.worst_case()
            )));
        }
        if let Some(chain) = self.chain_id
            && offer.chain_id() != chain
        {
            return Err(Error::Policy(format!(
                "the challenge is for chain {}, not the allowed chain {chain}",
                offer.chain_id()
            )));
        }
        if !self.allow_tokens.is_empty() && !self.allow_tokens.contains(&offer.currency()) {
            return Err(Error::Policy(format!(
                "token {} is not an allowed token",
                offer.currency()
            )));
        }
        if !self.allow_recipients.is_empty() && !self.allow_recipients.contains(&offer.recipient())
        {
            return Err(Error::Policy(format!(
                "recipient {} is not an allowed recipient",
                offer.recipient()
            )));
        }
        if let OfferKind::Session(session) = &offer.kind
            && !self.allow_escrows.is_empty()
            && !self.allow_escrows.contains(&session.escrow)
        {
            return Err(Error::Policy(format!(
                "escrow contract {} is not an allowed escrow",
                session.escrow
            )));
        }
        Ok(())
    }

    /// The deposit for a new channel: the server's suggestion (at least
    /// what is needed), capped by `max_deposit`.
    pub fn deposit(&self, suggested: Option<u128>, needed: u128) -> u128 {
        let wanted = suggested.unwrap_or(needed).max(needed);
        match self.max_deposit {
            Some(cap) => wanted.min(cap),
            None => wanted,
        }
    }

    /// The most a channel's deposit may grow to (top-ups stay below it).
    pub fn deposit_cap(&self, suggested: Option<u128>, current: u128) -> u128 {
        self.max_deposit
            .unwrap_or_else(|| suggested.unwrap_or(current).max(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::{ChargeOffer, Offer};
    use mpp::PaymentChallenge;
    use mpp::protocol::core::Base64UrlJson;

    fn offer(amount: u128, expires: Option<&str>) -> Offer {
        let mut challenge = PaymentChallenge::new(
            "id",
            "realm",
            "tempo",
            "charge",
            Base64UrlJson::from_value(&serde_json::json!({})).unwrap(),
        );
        challenge.expires = expires.map(str::to_owned);
        Offer {
            challenge,
            kind: OfferKind::Charge(ChargeOffer {
                amount,
                currency: Address::repeat_byte(1),
                recipient: Address::repeat_byte(2),
                chain_id: 42431,
                fee_payer: false,
                modes: None,
            }),
        }
    }

    #[test]
    fn caps_and_allow_lists() {
        let policy = Policy {
            max_amount: Some(100),
            ..Policy::default()
        };
        assert!(policy.check(&offer(100, None)).is_ok());
        assert!(matches!(
            policy.check(&offer(101, None)),
            Err(Error::Policy(_))
        ));
        assert!(matches!(
            policy.check(&offer(1, Some("2001-01-01T00:00:00Z"))),
            Err(Error::Expired(_))
        ));
        let policy = Policy {
            allow_recipients: vec![Address::repeat_byte(3)],
            ..Policy::default()
        };
        assert!(matches!(
            policy.check(&offer(1, None)),
            Err(Error::Policy(_))
        ));
        let policy = Policy {
            chain_id: Some(1),
            ..Policy::default()
        };
        assert!(matches!(
            policy.check(&offer(1, None)),
            Err(Error::Policy(_))
        ));
        let policy = Policy {
            allow_tokens: vec![Address::repeat_byte(1)],
            allow_recipients: vec![Address::repeat_byte(2)],
            chain_id: Some(42431),
            ..Policy::default()
        };
        assert!(policy.check(&offer(1, None)).is_ok());
    }

    #[test]
    fn deposits() {
        let policy = Policy::default();
        assert_eq!(policy.deposit(Some(5_000_000), 10), 5_000_000);
        assert_eq!(policy.deposit(Some(5), 10), 10);
        let capped = Policy {
            max_deposit: Some(1_000),
            ..Policy::default()
        };
        assert_eq!(capped.deposit(Some(5_000_000), 10), 1_000);
        assert_eq!(capped.deposit_cap(Some(5_000_000), 500), 1_000);
    }
}

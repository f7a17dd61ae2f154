//! What a route asks to be paid, before it becomes a challenge.

use alloy::primitives::Address;
use mpp::protocol::core::accept_payment::HasMethodIntent;
use serde_json::{Map, Value, json};

use crate::session::SessionOffer;

/// `address` in EIP-55 form. Offers name the same few configured addresses
/// in every challenge and every binding check, and each spelling costs a
/// keccak, so they are remembered (a bounded set: any beyond it is spelled
/// afresh each time).
pub(crate) fn checksummed(address: &Address) -> String {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    const KEPT: usize = 64;
    static SPELLED: LazyLock<RwLock<HashMap<Address, String>>> = LazyLock::new(RwLock::default);
    if let Some(known) = SPELLED
        .read()
        .ok()
        .and_then(|spelled| spelled.get(address).cloned())
    {
        return known;
    }
    let spelled = address.to_checksum(None);
    if let Ok(mut kept) = SPELLED.write()
        && kept.len() < KEPT
    {
        kept.insert(*address, spelled.clone());
    }
    spelled
}

/// Which non-zero charge submission modes a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionModes {
    /// The client sends a signed transaction and the server broadcasts it.
    pub pull: bool,
    /// The client broadcasts and sends the transaction hash.
    pub push: bool,
}

impl Default for SubmissionModes {
    fn default() -> Self {
        Self {
            pull: true,
            push: true,
        }
    }
}

/// A Tempo `charge`: a one-off TIP-20 transfer of `amount` base units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOffer {
    pub amount: u128,
    pub currency: Address,
    pub recipient: Address,
    pub chain_id: u64,
    /// The server pays the transaction fee (co-signs as fee payer).
    pub fee_payer: bool,
    pub modes: SubmissionModes,
    /// Shown to the payer; not part of what is verified.
    pub description: Option<String>,
}

impl ChargeOffer {
    /// The challenge's `request` object (canonicalised when encoded).
    pub fn request_json(&self) -> Value {
        let mut details = Map::new();
        details.insert("chainId".into(), json!(self.chain_id));
        if self.fee_payer && self.amount > 0 {
            details.insert("feePayer".into(), Value::Bool(true));
        }
        // The spec wants `supportedModes` present exactly when only one mode is
        // offered; zero-amount charges use a proof and negotiate no mode.
        if self.amount > 0 && !(self.modes.pull && self.modes.push) {
            let modes: Vec<&str> = [(self.modes.pull, "pull"), (self.modes.push, "push")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            details.insert("supportedModes".into(), json!(modes));
        }
        // Members in sorted order, so the challenge can print it as
        // canonical JSON without sorting (`challenge::encode_canonical`).
        json!({
            "amount": self.amount.to_string(),
            "currency": checksummed(&self.currency),
            "methodDetails": Value::Object(details),
            "recipient": checksummed(&self.recipient),
        })
    }
}

/// One way a route can be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    TempoCharge(ChargeOffer),
    TempoSession(SessionOffer),
}

impl Offer {
    pub fn method(&self) -> &'static str {
        "tempo"
    }

    pub fn intent(&self) -> &'static str {
        match self {
            Self::TempoCharge(_) => "charge",
            Self::TempoSession(_) => "session",
        }
    }

    /// The challenge's `request` object.
    pub fn request_json(&self) -> Value {
        match self {
            Self::TempoCharge(charge) => charge.request_json(),
            Self::TempoSession(session) => session.request_json(),
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            Self::TempoCharge(charge) => charge.description.as_deref(),
            Self::TempoSession(session) => session.description.as_deref(),
        }
    }
}

impl HasMethodIntent for Offer {
    fn method(&self) -> &str {
        Offer::method(self)
    }

    fn intent(&self) -> &str {
        Offer::intent(self)
    }
}

/// Orders `offers` by the client's `Accept-Payment` preferences: drops what
/// the client refused (`q=0`) or did not list, best first, server order on
/// ties. A missing or malformed header, or one that matches nothing, leaves
/// the server's list as it is.
pub fn rank_offers<'a>(offers: &'a [Offer], accept_payment: Option<&str>) -> Vec<&'a Offer> {
    let all = || offers.iter().collect();
    let Some(header) = accept_payment else {
        return all();
    };
    let Ok(preferences) = mpp::accept_payment::parse(header) else {
        return all();
    };
    let ranked = mpp::accept_payment::rank(offers, &preferences);
    if ranked.is_empty() { all() } else { ranked }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_spellings_are_eip55_within_and_beyond_the_kept_set() {
        for round in 0..2 {
            for byte in 0..=200u8 {
                let address = Address::repeat_byte(byte);
                assert_eq!(
                    checksummed(&address),
                    address.to_checksum(None),
                    "{byte} in round {round}"
                );
            }
        }
    }

    fn offer(amount: u128, modes: SubmissionModes, fee_payer: bool) -> ChargeOffer {
        ChargeOffer {
            amount,
            currency: Address::repeat_byte(0x20),
            recipient: Address::repeat_byte(0x11),
            chain_id: 42431,
            fee_payer,
            modes,
            description: None,
        }
    }

    #[test]
    fn request_names_modes_only_when_one_is_missing() {
        let both = offer(10, SubmissionModes::default(), false).request_json();
        assert!(both["methodDetails"].get("supportedModes").is_none());
        assert_eq!(both["amount"], "10");
        assert_eq!(both["methodDetails"]["chainId"], 42431);

        let pull_only = SubmissionModes {
            pull: true,
            push: false,
        };
        let only = offer(10, pull_only, true).request_json();
        assert_eq!(only["methodDetails"]["supportedModes"], json!(["pull"]));
        assert_eq!(only["methodDetails"]["feePayer"], true);

        let zero = offer(0, pull_only, true).request_json();
        assert!(zero["methodDetails"].get("supportedModes").is_none());
        assert!(zero["methodDetails"].get("feePayer").is_none());
    }

    #[test]
    fn accept_payment_filters_and_falls_back() {
        let offers = vec![Offer::TempoCharge(offer(
            1,
            SubmissionModes::default(),
            false,
        ))];
        assert_eq!(rank_offers(&offers, None).len(), 1);
        assert_eq!(rank_offers(&offers, Some("tempo/charge")).len(), 1);
        assert_eq!(rank_offers(&offers, Some("tempo/*;q=0.5")).len(), 1);
        // Matches nothing or is malformed: the server's full list.
        assert_eq!(rank_offers(&offers, Some("stripe/charge")).len(), 1);
        assert_eq!(rank_offers(&offers, Some(";;;")).len(), 1);
    }
}

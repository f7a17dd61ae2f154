//! Turning a request into offers: free, fixed, or quoted from its body.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;
use tollgate_payments::{ChargeOffer, Offer};
use tollgate_pricing::{Endpoint, PriceTable, Quote, QuoteError};

/// How a route's offers are made.
pub enum Pricing {
    Free,
    Fixed(Vec<Offer>),
    /// Priced per request by a worst-case quote of its body.
    Quoted {
        endpoint: Endpoint,
        table: Arc<PriceTable>,
        /// The chain terms; the quote fills in amount and description.
        template: ChargeOffer,
    },
}

impl Pricing {
    /// The offers for this request (`None`: free), or why it cannot be
    /// priced (a 400, before any challenge).
    pub fn price(&self, body: &[u8]) -> Result<Option<Priced<'_>>, QuoteError> {
        match self {
            Self::Free => Ok(None),
            Self::Fixed(offers) => Ok(Some(Priced {
                offers: Cow::Borrowed(offers),
                quoted: None,
            })),
            Self::Quoted {
                endpoint,
                table,
                template,
            } => {
                let json: Value = serde_json::from_slice(body).map_err(|e| QuoteError {
                    param: None,
                    message: format!("the body is not valid JSON: {e}"),
                    code: "invalid-json",
                })?;
                let quote = endpoint.quote(table, &json)?;
                let offer = ChargeOffer {
                    amount: quote.amount,
                    description: Some(quote.description.clone()),
                    ..template.clone()
                };
                Ok(Some(Priced {
                    offers: Cow::Owned(vec![Offer::TempoCharge(offer)]),
                    quoted: Some(QuotedCall {
                        endpoint: *endpoint,
                        table: Arc::clone(table),
                        quote,
                        request: json,
                    }),
                }))
            }
        }
    }
}

/// A priced request.
pub struct Priced<'a> {
    pub offers: Cow<'a, [Offer]>,
    /// Present for quoted routes: what metering needs after the call.
    pub quoted: Option<QuotedCall>,
}

/// A request priced by a quote, kept for metering its actual usage.
pub struct QuotedCall {
    pub endpoint: Endpoint,
    pub table: Arc<PriceTable>,
    pub quote: Quote,
    pub request: Value,
}

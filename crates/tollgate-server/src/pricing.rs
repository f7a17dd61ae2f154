//! Turning a request into offers: free, fixed, or quoted from its body.

use std::borrow::Cow;

use bytes::Bytes;
use std::sync::Arc;

use serde_json::Value;
use tollgate_payments::session::SessionOffer;
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
        /// Session terms (one per protocol offered), beside the charge.
        sessions: Vec<SessionOffer>,
    },
}

impl Pricing {
    /// Whether requests are quoted (and so may be paid by a session).
    pub fn session_terms(&self) -> Option<&SessionOffer> {
        match self {
            Self::Quoted { sessions, .. } => sessions.first(),
            _ => None,
        }
    }

    /// The offers for this request (`None`: free), or why it cannot be
    /// priced (a 400, before any challenge).
    /// `translated`: the Anthropic Messages body a chat request becomes
    /// when its model's upstream speaks Anthropic; that is what is quoted.
    pub async fn price(
        &self,
        content_type: Option<&str>,
        body: &Bytes,
        translated: Option<&[u8]>,
    ) -> Result<Option<Priced<'_>>, QuoteError> {
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
                sessions,
            } => {
                let (quote, json) = if *endpoint == Endpoint::Transcription {
                    transcription_quote(table, content_type, body).await?
                } else {
                    let json: Value = serde_json::from_slice(body).map_err(|e| QuoteError {
                        param: None,
                        message: format!("the body is not valid JSON: {e}"),
                        code: "invalid-json",
                    })?;
                    let quote = match translated {
                        Some(messages) if *endpoint == Endpoint::Chat => {
                            let messages: Value =
                                serde_json::from_slice(messages).map_err(|e| QuoteError {
                                    param: None,
                                    message: format!("the translated request is not JSON: {e}"),
                                    code: "invalid-json",
                                })?;
                            tollgate_pricing::quote::chat_via_messages(table, &messages)?
                        }
                        _ => endpoint.quote(table, &json)?,
                    };
                    (quote, json)
                };
                let offer = ChargeOffer {
                    amount: quote.amount,
                    description: Some(quote.description.clone()),
                    ..template.clone()
                };
                let mut offers = vec![Offer::TempoCharge(offer)];
                offers.extend(sessions.iter().map(|session| {
                    Offer::TempoSession(
                        session.for_amount(quote.amount, Some(quote.description.clone())),
                    )
                }));
                Ok(Some(Priced {
                    offers: Cow::Owned(offers),
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

/// Reads `model` and the audio `file` from a multipart upload and prices
/// the file's duration.
async fn transcription_quote(
    table: &PriceTable,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<(Quote, Value), QuoteError> {
    let invalid = |param, code, message: String| QuoteError {
        param,
        message,
        code,
    };
    let fields =
        tollgate_providers::multipart::fields(content_type.unwrap_or_default(), body.clone())
            .await
            .map_err(|e| invalid(None, "invalid-body", e))?;
    let model = fields
        .get("model")
        .and_then(|m| std::str::from_utf8(m).ok())
        .ok_or_else(|| {
            invalid(
                Some("model"),
                "missing-parameter",
                "`model` is required".into(),
            )
        })?;
    let file = fields
        .get("file")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            invalid(
                Some("file"),
                "missing-parameter",
                "an audio `file` is required".into(),
            )
        })?;
    let seconds = tollgate_pricing::audio::duration_secs(file)
        .map_err(|e| invalid(Some("file"), "unreadable-audio", e.to_string()))?;
    let quote = tollgate_pricing::quote::transcription(table, model, seconds)?;
    Ok((quote, serde_json::json!({"model": model})))
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

impl QuotedCall {
    /// `stream: true`.
    pub fn is_streamed(&self) -> bool {
        self.request.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

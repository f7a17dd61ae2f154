//! Configured routes as products of the pipeline: priced free, fixed or by
//! a quote of the body, paid by `charge` or `session`.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::Request;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tollgate_payments::{Authorized, Offer, PaymentProblem, ProblemKind};

use crate::metering::Meter;
use crate::observe::{self, Intent, RequestOutcome};
use crate::pipeline::{self, Prepared, Product, Step};
use crate::policy::{self, Admission, Challenger};
use crate::problem::{ApiError, Problem};
use crate::state::{Gateway, Route};
use crate::upstream::UpstreamCall;

/// The axum handler of every configured route.
pub async fn handle(gateway: Arc<Gateway>, route: Arc<Route>, request: Request) -> Response {
    let product = PaidRoute {
        gateway: &gateway,
        route: &route,
    };
    pipeline::serve(&gateway, &product, request)
        .await
        .into_response()
}

/// A stream can pause for a voucher when its delivery passes what is
/// authorized; a whole answer cannot. So a streamed request's session
/// offers ask only for the prompt plus `output_tokens` priced (never above
/// the worst case), and the stream asks for the rest as it goes
/// (`payment-need-voucher`). Charge offers keep the worst case: a charge is
/// paid once.
fn ask_less_of_streamed_sessions(terms: &mut [Offer], meter: &Meter, output_tokens: u64) {
    let opening = meter.cost(meter.counted(output_tokens));
    for offer in terms.iter_mut() {
        if let Offer::TempoSession(session) = offer {
            session.amount = session.amount.min(opening);
        }
    }
}

struct PaidRoute<'r> {
    gateway: &'r Arc<Gateway>,
    route: &'r Route,
}

fn path_and_query(parts: &Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str())
}

#[async_trait]
impl Product for PaidRoute<'_> {
    /// The offers the request may be paid by.
    type Terms = Vec<Offer>;

    async fn prepare<'a>(
        &'a self,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<Step<'a, Vec<Offer>>, ApiError> {
        let route = self.route;
        // Session actions that buy nothing: body-less vouchers, top-ups,
        // opens and closes on the resource itself, and `HEAD`.
        if let (Some(sessions), Some(_)) =
            (self.gateway.gate.sessions(), route.pricing.session_terms())
            && policy::session::is_action_only(parts, body)
        {
            return policy::session::action_only(self.gateway, route, parts, sessions)
                .await
                .map(|mut response| {
                    observe::attach(&mut response, RequestOutcome::intent(Intent::Session));
                    Step::Answered(response)
                });
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let options = route.translation.options();
        let call = |body: Bytes| {
            UpstreamCall::prepare(
                route.upstream_for(&body),
                route.client_api,
                &options,
                parts.method.clone(),
                path_and_query(parts),
                &parts.headers,
                body,
            )
        };
        // The call first: the translation refuses (400) before any price or
        // challenge, and a translated request is quoted as what it sends.
        let as_sent = call(body.clone())?;
        let priced = route
            .pricing
            .price(
                content_type,
                body,
                as_sent.translated_body().map(|b| b.as_ref()),
            )
            .await
            .map_err(|e| Problem::invalid_request(e.code, e.message, e.param))?;
        let Some(priced) = priced else {
            return Ok(Step::Free(as_sent));
        };
        let meter = priced.quoted.map(|quoted| Meter::new(quoted, &route.scope));
        let upstream_body = match &meter {
            Some(meter) => meter.upstream_body(body.clone()),
            None => body.clone(),
        };
        let call = if upstream_body == *body {
            as_sent
        } else {
            call(upstream_body)?
        };
        let mut terms = priced.offers.into_owned();
        if let Some(meter) = meter.as_ref().filter(|m| m.call().is_streamed()) {
            ask_less_of_streamed_sessions(&mut terms, meter, self.gateway.stream_challenge_tokens);
        }
        Ok(Step::Paid(Box::new(Prepared { call, meter, terms })))
    }

    async fn admit(
        &self,
        parts: &Parts,
        body: &Bytes,
        prepared: &Prepared<'_, Vec<Offer>>,
    ) -> Result<Admission, ApiError> {
        let route = self.route;
        let challenger = Challenger::new(
            self.gateway,
            &route.scope,
            prepared.terms.clone(),
            body,
            &parts.headers,
        );
        let authorization =
            policy::authorization(&parts.headers).map_err(|p| challenger.refuse(&p))?;
        let authorized = self
            .gateway
            .gate
            .authorize(authorization, &challenger.offers, &route.scope, body)
            .await;
        match authorized {
            Ok(Authorized::Charge(pending)) => Ok(Admission::Held(Box::new(
                policy::charge::hold(pending, challenger, prepared.meter.is_some()).await?,
            ))),
            Ok(Authorized::Session(authorized)) => match &prepared.meter {
                Some(meter) => {
                    policy::session::admit(self.gateway, parts, body, authorized, meter, challenger)
                        .await
                }
                None => Err(challenger.refuse(&PaymentProblem::new(
                    ProblemKind::MethodUnsupported,
                    "this route is not paid by sessions",
                ))),
            },
            Err(problem) => Err(challenger.refuse(&problem)),
        }
    }
}

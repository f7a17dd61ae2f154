//! What the request pipeline tells the metrics layer about a response it
//! built: a response extension, merged field by field, so each stage (the
//! problem builders, the payment step, the handler) adds what it knows. The
//! metrics layer reads it and never looks into the pipeline's internals.
//!
//! Nothing here may carry a credential, an address, a signature or content:
//! only route scopes, intents, stable problem codes, priced model ids and
//! timings.

use std::time::Duration;

use axum::response::Response;

/// How a request was (or was to be) paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    Charge,
    Session,
    /// The accountless plan endpoint (a session with plan buckets).
    Plan,
}

impl Intent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Session => "session",
            Self::Plan => "plan",
        }
    }
}

/// A problem response's stable `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: String,
    /// A refusal of the payment itself (a 402 and its kin), as opposed to a
    /// request that could not be priced or an upstream failure.
    pub payment: bool,
}

/// Where the time of a paid request went until its response headers (the
/// parts `Server-Timing` names, and the delivery step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Admission: verification, claims, broadcast, reservation.
    pub payment: Option<Duration>,
    /// Until the upstream's response headers.
    pub upstream: Option<Duration>,
    /// From the upstream's headers to ours: a whole answer read, metered and
    /// committed; a stream's first event.
    pub deliver: Option<Duration>,
}

/// What one response is about. Every field is optional; [`attach`] merges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The route scope (`POST /v1/chat/completions`); the metrics layer
    /// falls back to the matched method and path.
    pub route: Option<String>,
    pub intent: Option<Intent>,
    /// Money moved or was committed for this request.
    pub paid: bool,
    pub problem: Option<Problem>,
    /// The priced model (from the price table, never free text).
    pub model: Option<String>,
    pub timings: Timings,
}

impl RequestOutcome {
    /// A paid request.
    pub fn paid(intent: Intent) -> Self {
        Self {
            intent: Some(intent),
            paid: true,
            ..Self::default()
        }
    }

    /// Of a request with this intent (paid or not).
    pub fn intent(intent: Intent) -> Self {
        Self {
            intent: Some(intent),
            ..Self::default()
        }
    }

    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// Fields set in `later` win; the rest are kept.
    fn merge(&mut self, later: RequestOutcome) {
        let RequestOutcome {
            route,
            intent,
            paid,
            problem,
            model,
            timings,
        } = later;
        self.route = route.or(self.route.take());
        self.intent = intent.or(self.intent);
        self.paid |= paid;
        self.problem = problem.or(self.problem.take());
        self.model = model.or(self.model.take());
        self.timings = Timings {
            payment: timings.payment.or(self.timings.payment),
            upstream: timings.upstream.or(self.timings.upstream),
            deliver: timings.deliver.or(self.timings.deliver),
        };
    }
}

/// Adds what `outcome` knows to the response's outcome.
pub fn attach(response: &mut Response, outcome: RequestOutcome) {
    match response.extensions_mut().get_mut::<RequestOutcome>() {
        Some(existing) => existing.merge(outcome),
        None => {
            response.extensions_mut().insert(outcome);
        }
    }
}

/// Marks a problem response with its stable code.
pub fn note_problem(response: &mut Response, code: &str, payment: bool) {
    attach(
        response,
        RequestOutcome {
            problem: Some(Problem {
                code: code.to_owned(),
                payment,
            }),
            ..RequestOutcome::default()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_stages_add_to_what_earlier_ones_attached() {
        let mut response = Response::new(axum::body::Body::empty());
        note_problem(&mut response, "payment-required", true);
        attach(
            &mut response,
            RequestOutcome::intent(Intent::Charge).with_timings(Timings {
                upstream: Some(Duration::from_millis(3)),
                ..Timings::default()
            }),
        );
        attach(
            &mut response,
            RequestOutcome::default().with_model("gpt-4o"),
        );
        let outcome = response.extensions().get::<RequestOutcome>().unwrap();
        assert_eq!(outcome.problem.as_ref().unwrap().code, "payment-required");
        assert_eq!(outcome.intent, Some(Intent::Charge));
        assert_eq!(outcome.model.as_deref(), Some("gpt-4o"));
        assert_eq!(outcome.timings.upstream, Some(Duration::from_millis(3)));
        assert!(!outcome.paid);
    }
}

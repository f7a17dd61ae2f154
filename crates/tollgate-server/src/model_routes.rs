//! Free helper routes the SDKs call besides inference:
//!
//! - `GET /v1/models`: what this gateway sells, with prices; in Anthropic's
//!   list shape (Claude models only) when the caller sends
//!   `anthropic-version`, as the Anthropic SDKs always do.
//! - `GET /v1/models/{id}`: one model, as in the list (OpenAI's
//!   `models.retrieve`, Anthropic's `models.retrieve`).
//! - `POST /v1/messages/count_tokens`: the input tokens of a Messages
//!   request, counted with the estimator the quotes use. Free unless
//!   `claude.count_tokens_charge` sets a fixed price; then it is a paid
//!   route like any other, answered in-process.
//!
//! A route the operator configures on the same method and path wins.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_pricing::{Endpoint, PriceTable};
use tollgate_providers::{Protocol, Upstream};

use crate::config::{Config, RoutePrice};
use crate::problem::Problem;
use crate::state::{ClientApi, Gateway, Route};

pub const COUNT_TOKENS_PATH: &str = "/v1/messages/count_tokens";

/// Adds the helper routes the configuration does not declare itself.
pub fn register(
    mut router: Router,
    config: &Config,
    gateway: &Arc<Gateway>,
    translation: &Arc<crate::translation::Translation>,
    table: &Arc<PriceTable>,
) -> Router {
    // Any configured route on the path wins (axum allows one per path).
    let declared = |path: &str| config.routes.iter().any(|r| r.path == path);
    let catalog = Arc::new(Catalog::new(config));
    if !declared("/v1/models") {
        let catalog = Arc::clone(&catalog);
        router = router.route(
            "/v1/models",
            get(move |headers: HeaderMap| async move { catalog.list(&headers) }),
        );
    }
    if !declared("/v1/models/{id}") {
        router = router.route(
            "/v1/models/{id}",
            get(
                move |Path(id): Path<String>, headers: HeaderMap| async move {
                    catalog.retrieve(&id, &headers)
                },
            ),
        );
    }
    if !declared(COUNT_TOKENS_PATH) {
        let counter = count_tokens_router(Arc::clone(table));
        let answer = if config.claude.count_tokens_charge == 0 {
            counter
        } else {
            let route = Arc::new(Route {
                scope: format!("POST {COUNT_TOKENS_PATH}"),
                upstream: Upstream::in_process(counter).with_protocol(Protocol::Anthropic),
                model_upstreams: Vec::new(),
                client_api: ClientApi::Other,
                pricing: crate::pricing::Pricing::Fixed(vec![
                    tollgate_payments::Offer::TempoCharge(crate::app::fixed_charge(
                        config,
                        config.claude.count_tokens_charge,
                    )),
                ]),
                translation: Arc::clone(translation),
            });
            let gateway = Arc::clone(gateway);
            Router::new().route(
                COUNT_TOKENS_PATH,
                post(move |request: Request| {
                    crate::routes::handle(Arc::clone(&gateway), Arc::clone(&route), request)
                }),
            )
        };
        router =
            router.merge(answer.layer(axum::middleware::from_fn(crate::error_shape::anthropic)));
    }
    router
}

/// The models on sale, as the list shows them.
struct Catalog {
    /// OpenAI-shape entries (`id`, `object`, `created`, `owned_by`, `tollgate`).
    entries: Vec<Value>,
    table: PriceTable,
}

impl Catalog {
    fn new(config: &Config) -> Self {
        let endpoints: Vec<Endpoint> = config
            .routes
            .iter()
            .filter_map(|r| match r.price {
                RoutePrice::Quoted(endpoint) => Some(endpoint),
                _ => None,
            })
            .collect();
        Self {
            entries: tollgate_pricing::listing::models(&config.pricing.table, &endpoints),
            table: config.pricing.table.clone(),
        }
    }

    fn is_claude(&self, id: &str) -> bool {
        self.table
            .chat_model(id)
            .is_some_and(|(_, price)| price.is_anthropic())
    }

    /// The entry for `id`, or for the model `id` is an alias of (shown
    /// under the name asked for).
    fn find(&self, id: &str) -> Option<Value> {
        let by_id = |wanted: &str| self.entries.iter().find(|e| e["id"] == wanted).cloned();
        by_id(id).or_else(|| {
            let (canonical, _) = self.table.chat_model(id)?;
            let mut entry = by_id(canonical)?;
            entry["id"] = json!(id);
            Some(entry)
        })
    }

    fn list(&self, headers: &HeaderMap) -> Response {
        if !speaks_anthropic(headers) {
            return axum::Json(json!({"object": "list", "data": self.entries})).into_response();
        }
        let data: Vec<Value> = self
            .entries
            .iter()
            .filter(|e| e["id"].as_str().is_some_and(|id| self.is_claude(id)))
            .map(anthropic_model)
            .collect();
        let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
        axum::Json(json!({"data": data, "has_more": false, "first_id": first, "last_id": last}))
            .into_response()
    }

    fn retrieve(&self, id: &str, headers: &HeaderMap) -> Response {
        let anthropic = speaks_anthropic(headers);
        match self.find(id) {
            Some(entry) if !anthropic => axum::Json(entry).into_response(),
            Some(entry) if self.is_claude(id) => {
                axum::Json(anthropic_model(&entry)).into_response()
            }
            _ if anthropic => {
                let body = json!({"type": "error", "error": {
                    "type": "not_found_error", "message": format!("model: {id}"),
                    "code": "model_not_found"}});
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }
            _ => Problem::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("The model `{id}` is not sold by this gateway"),
            )
            .param("model")
            .into_response(),
        }
    }
}

fn speaks_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// An entry in Anthropic's model shape (`type`, `id`, `display_name`,
/// `created_at`), prices kept under `tollgate`.
fn anthropic_model(entry: &Value) -> Value {
    let id = entry["id"].as_str().unwrap_or_default();
    json!({
        "type": "model",
        "id": id,
        "display_name": display_name(id),
        "created_at": created_at(id),
        "tollgate": entry["tollgate"],
    })
}

/// `claude-sonnet-4-5-20250929` → `Claude Sonnet 4.5`.
fn display_name(id: &str) -> String {
    let mut words = Vec::new();
    let mut version = Vec::new();
    for part in id.split('-') {
        if part.len() == 8 && part.bytes().all(|b| b.is_ascii_digit()) {
            continue; // the release date
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            version.push(part);
        } else {
            if !version.is_empty() {
                words.push(version.join("."));
                version.clear();
            }
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                words.push(first.to_uppercase().chain(chars).collect());
            }
        }
    }
    if !version.is_empty() {
        words.push(version.join("."));
    }
    words.join(" ")
}

/// The release date in the id (`…-20250929`) as RFC 3339, else the epoch.
fn created_at(id: &str) -> String {
    let date = id
        .rsplit('-')
        .next()
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()));
    match date {
        Some(d) => format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..]),
        None => "1970-01-01T00:00:00Z".to_owned(),
    }
}

/// `POST /v1/messages/count_tokens`, answered from the price table.
fn count_tokens_router(table: Arc<PriceTable>) -> Router {
    Router::new().route(
        COUNT_TOKENS_PATH,
        post(move |body: Bytes| async move { count_tokens(&table, &body) }),
    )
}

fn count_tokens(table: &PriceTable, body: &[u8]) -> Response {
    let json: Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(e) => {
            return Problem::invalid_request(
                "invalid-json",
                format!("the body is not valid JSON: {e}"),
                None,
            )
            .into_response();
        }
    };
    match tollgate_pricing::quote::messages_input_tokens(table, &json) {
        Ok((_, input_tokens)) => axum::Json(json!({"input_tokens": input_tokens})).into_response(),
        Err(e) => Problem::invalid_request(e.code, e.message, e.param).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_names_and_dates_from_ids() {
        assert_eq!(
            display_name("claude-sonnet-4-5-20250929"),
            "Claude Sonnet 4.5"
        );
        assert_eq!(display_name("claude-opus-4-7"), "Claude Opus 4.7");
        assert_eq!(
            display_name("claude-3-5-haiku-20241022"),
            "Claude 3.5 Haiku"
        );
        assert_eq!(
            created_at("claude-haiku-4-5-20251001"),
            "2025-10-01T00:00:00Z"
        );
        assert_eq!(created_at("claude-opus-4-7"), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn count_tokens_uses_the_quote_estimator() {
        let table = PriceTable::builtin();
        let body = json!({"model": "claude-haiku-4-5",
            "messages": [{"role": "user", "content": "Hello, Claude"}]});
        let response = count_tokens(&table, body.to_string().as_bytes());
        assert_eq!(response.status(), 200);
        let (_, expected) = tollgate_pricing::quote::messages_input_tokens(&table, &body).unwrap();
        assert!(expected > 0);
        let bad = count_tokens(&table, br#"{"model":"claude-haiku-4-5"}"#);
        assert_eq!(bad.status(), 400);
    }
}

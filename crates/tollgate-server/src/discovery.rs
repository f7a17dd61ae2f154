//! Discovery (`draft-payment-discovery-00`): `GET /openapi.json` with
//! `x-service-info` and, on every paid operation, `x-payment-info` in the
//! multi-offer form (one offer per intent the route's 402 carries), and
//! `GET /llms.txt`. Both are generated once from the config and the price
//! table; the runtime 402 stays authoritative.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tollgate_pricing::{Endpoint, PriceTable};

use crate::config::{Config, PlansConfig, RouteConfig, RoutePrice};
use crate::model_routes::COUNT_TOKENS_PATH;

pub const OPENAPI_PATH: &str = "/openapi.json";
pub const LLMS_PATH: &str = "/llms.txt";

/// Adds both documents, unless the config routes those paths itself.
pub fn add_routes(mut router: Router, config: &Config) -> Router {
    let taken = |path: &str| config.routes.iter().any(|r| r.path == path);
    if !taken(OPENAPI_PATH) {
        let body = openapi(config).to_string();
        router = router.route(
            OPENAPI_PATH,
            get(move || async move { document(body.clone(), "application/json") }),
        );
    }
    if !taken(LLMS_PATH) {
        let body = llms_txt(config);
        router = router.route(
            LLMS_PATH,
            get(move || async move { document(body.clone(), "text/plain; charset=utf-8") }),
        );
    }
    router
}

fn document(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// One offer of `x-payment-info`: what the route's 402 will ask.
fn offer(intent: &str, amount: Option<u128>, currency: &str, description: String) -> Value {
    json!({
        "intent": intent,
        "method": "tempo",
        "amount": amount.map(|a| a.to_string()),
        "currency": currency,
        "description": description,
    })
}

/// The offers a configured route's 402 carries, in the same order.
fn route_offers(config: &Config, route: &RouteConfig) -> Option<Vec<Value>> {
    let currency = config.chain.currency.to_checksum(None);
    match route.price {
        RoutePrice::Free => None,
        RoutePrice::Fixed(amount) => Some(vec![offer(
            "charge",
            Some(amount),
            &currency,
            route
                .description
                .clone()
                .unwrap_or_else(|| format!("{amount} base units per request")),
        )]),
        RoutePrice::Quoted(_) => {
            let mut offers = vec![offer(
                "charge",
                None,
                &currency,
                "quoted per request: the worst case of this exact body (input tokens counted, output at its cap), paid up front".into(),
            )];
            if config.session.is_some() {
                offers.push(offer(
                    "session",
                    None,
                    &currency,
                    "quoted per request from an escrow channel; each request is charged its actual usage".into(),
                ));
            }
            Some(offers)
        }
    }
}

fn plan_offers(config: &Config, plans: &PlansConfig) -> Vec<Value> {
    vec![offer(
        "session",
        Some(plans.voucher_bucket),
        &config.chain.currency.to_checksum(None),
        "a plan session: vouchers in buckets of this amount; each turn is charged its actual cost"
            .into(),
    )]
}

/// The OpenAPI 3.1 discovery document.
pub fn openapi(config: &Config) -> Value {
    let table = &config.pricing.table;
    let mut paths: Map<String, Value> = Map::new();
    let mut put = |path: &str, method: &str, operation: Value| {
        let item = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[method] = operation;
    };
    for route in &config.routes {
        let method = route.method.as_str().to_ascii_lowercase();
        let mut operation = json!({
            "summary": summary(route),
            "responses": {"200": {"description": "Successful response"}},
        });
        if let Some(offers) = route_offers(config, route) {
            operation["x-payment-info"] = json!({"offers": offers});
            operation["responses"]["402"] = json!({"description": "Payment Required"});
        }
        if let RoutePrice::Quoted(endpoint) = route.price {
            operation["responses"]["400"] =
                json!({"description": "The request cannot be priced (before any challenge)"});
            if let Some(body) = request_body(endpoint, table) {
                operation["requestBody"] = body;
            }
        } else if method == "post" || method == "put" || method == "patch" {
            operation["requestBody"] = json!({
                "content": {"application/json": {"schema": {"type": "object"}, "example": {}}}
            });
        }
        put(&route.path, &method, operation);
    }
    if !config
        .routes
        .iter()
        .any(|r| r.path == "/v1/models" && r.method == http::Method::GET)
    {
        put(
            "/v1/models",
            "get",
            json!({
                "summary": "The models sold here, with their prices (free)",
                "responses": {"200": {"description": "Successful response"}},
            }),
        );
    }
    let declared = |path: &str| config.routes.iter().any(|r| r.path == path);
    if !declared("/v1/models/{id}") {
        put(
            "/v1/models/{id}",
            "get",
            json!({
                "summary": "One model sold here, with its prices (free)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "Successful response"},
                    "404": {"description": "Not sold here"},
                },
            }),
        );
    }
    if !declared(COUNT_TOKENS_PATH) {
        let mut operation = json!({
            "summary": "Count a Claude message's input tokens (answered by the gateway)",
            "responses": {"200": {"description": "Successful response"}},
        });
        if let Some(body) = request_body(Endpoint::Messages, table) {
            operation["requestBody"] = body;
        }
        let charge = config.claude.count_tokens_charge;
        if charge > 0 {
            operation["x-payment-info"] = json!({"offers": [offer(
                "charge",
                Some(charge),
                &config.chain.currency.to_checksum(None),
                format!("{charge} base units per request"),
            )]});
            operation["responses"]["402"] = json!({"description": "Payment Required"});
        }
        put(COUNT_TOKENS_PATH, "post", operation);
    }
    if let Some(plans) = &config.plans {
        let first_plan = plans.plans.first();
        let example_plan = first_plan.map(|p| p.name.clone()).unwrap_or_default();
        let example_model = first_plan
            .and_then(|p| p.models.first().cloned())
            .unwrap_or_default();
        put(
            crate::plans::PATH,
            "post",
            json!({
                "summary": "Accountless chat on a plan, paid by a session with voucher buckets",
                "x-payment-info": {"offers": plan_offers(config, plans)},
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "plan": {"type": "string", "enum": plans.plans.iter().map(|p| p.name.clone()).collect::<Vec<_>>()},
                                "model": {"type": "string"},
                                "model_optimization": {"type": "boolean", "description": "let the gateway pick the plan's cheapest model that fits (then omit model)"},
                                "messages": chat_messages_schema(),
                                "max_tokens": {"type": "integer", "minimum": 1},
                                "stream": {"type": "boolean"},
                            },
                            "required": ["plan", "model_optimization", "messages"],
                        },
                        "example": {"plan": example_plan, "model": example_model, "model_optimization": false, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
                    }},
                },
                "responses": {
                    "200": {"description": "Successful response"},
                    "400": {"description": "Invalid request (before any challenge)"},
                    "402": {"description": "Payment Required"},
                },
            }),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("Tollgate at {}", config.realm),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "AI inference sold per request with the Machine Payments Protocol (HTTP 402, WWW-Authenticate: Payment) on the Tempo chain: no account, no API key. Amounts are integer base units of the currency (6 decimals).",
        },
        "x-service-info": {
            "categories": ["compute"],
            "docs": {"llms": LLMS_PATH, "apiReference": OPENAPI_PATH},
        },
        "paths": paths,
    })
}

fn summary(route: &RouteConfig) -> String {
    if let Some(description) = &route.description {
        return description.clone();
    }
    let what = match route.price {
        RoutePrice::Quoted(Endpoint::Chat) => "Chat completion (OpenAI format)",
        RoutePrice::Quoted(Endpoint::Responses) => "Response (OpenAI Responses API)",
        RoutePrice::Quoted(Endpoint::Messages) => "Claude message (Anthropic Messages API)",
        RoutePrice::Quoted(Endpoint::Embeddings) => "Embeddings",
        RoutePrice::Quoted(Endpoint::Images) => "Image generation",
        RoutePrice::Quoted(Endpoint::Speech) => "Text to speech",
        RoutePrice::Quoted(Endpoint::Transcription) => "Audio transcription",
        RoutePrice::Fixed(_) => "Paid request (fixed price)",
        RoutePrice::Free => "Free request",
    };
    what.to_owned()
}

fn chat_messages_schema() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"role": {"type": "string"}, "content": {}},
            "required": ["role", "content"],
        },
    })
}

/// A request schema and a priceable example (for agents and for our tests).
fn request_body(endpoint: Endpoint, table: &PriceTable) -> Option<Value> {
    let first = |ids: Vec<&String>| ids.first().map(|s| s.to_string());
    let chat_model = table
        .chat_model("gpt-4o-mini")
        .map(|(id, _)| id.to_owned())
        .or_else(|| first(table.chat.keys().collect()));
    let claude = first(
        table
            .chat
            .iter()
            .filter(|(_, p)| p.is_anthropic())
            .map(|(id, _)| id)
            .collect(),
    );
    let string = json!({"type": "string"});
    let (schema, example) = match endpoint {
        Endpoint::Chat => (
            json!({"type": "object", "properties": {
                "model": string, "messages": chat_messages_schema(),
                "max_tokens": {"type": "integer"}, "max_completion_tokens": {"type": "integer"},
                "n": {"type": "integer"}, "stream": {"type": "boolean"}},
                "required": ["model", "messages"]}),
            json!({"model": chat_model?, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}),
        ),
        Endpoint::Responses => (
            json!({"type": "object", "properties": {
                "model": string, "input": {}, "max_output_tokens": {"type": "integer"},
                "stream": {"type": "boolean"}}, "required": ["model", "input"]}),
            json!({"model": chat_model?, "input": "hi", "max_output_tokens": 16}),
        ),
        Endpoint::Messages => (
            json!({"type": "object", "properties": {
                "model": string, "messages": chat_messages_schema(),
                "max_tokens": {"type": "integer"}, "stream": {"type": "boolean"}},
                "required": ["model", "messages", "max_tokens"]}),
            json!({"model": claude?, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        Endpoint::Embeddings => (
            json!({"type": "object", "properties": {"model": string, "input": {}},
                "required": ["model", "input"]}),
            json!({"model": first(table.embeddings.keys().collect())?, "input": "hi"}),
        ),
        Endpoint::Images => (
            json!({"type": "object", "properties": {
                "model": string, "prompt": string, "n": {"type": "integer"},
                "size": string, "quality": string}, "required": ["model", "prompt"]}),
            json!({"model": first(table.images.keys().collect())?, "prompt": "a lighthouse", "n": 1}),
        ),
        Endpoint::Speech => (
            json!({"type": "object", "properties": {"model": string, "input": string, "voice": string},
                "required": ["model", "input", "voice"]}),
            json!({"model": first(table.speech.keys().collect())?, "input": "hi", "voice": "alloy"}),
        ),
        Endpoint::Transcription => {
            return Some(json!({
                "required": true,
                "content": {"multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {"model": string, "file": {"type": "string", "format": "binary"}},
                    "required": ["model", "file"],
                }}},
            }));
        }
    };
    Some(json!({
        "required": true,
        "content": {"application/json": {"schema": schema, "example": example}},
    }))
}

/// `llms.txt`: the same facts for a language model reading the site.
pub fn llms_txt(config: &Config) -> String {
    let chain = &config.chain;
    let mut out = format!(
        "# Tollgate at {realm}\n\n\
         > AI inference sold per request with the Machine Payments Protocol: \
         HTTP 402 with `WWW-Authenticate: Payment` challenges, paid on the Tempo chain \
         (chain id {chain_id}) in the TIP-20 token {currency} (6 decimals; amounts are \
         integer base units, 1000000 = 1 token). No account and no API key.\n\n\
         Machine-readable: [{OPENAPI_PATH}]({OPENAPI_PATH}) (OpenAPI 3.1 with `x-payment-info`).\n\n\
         ## How to pay\n\n\
         1. Send the request as you would to the provider's API. Unpaid, it is answered \
         `402 Payment Required` with one `WWW-Authenticate: Payment` challenge per offer \
         (`intent=\"charge\"` and, where offered, `intent=\"session\"`); a request that \
         cannot be priced is answered 400 before any challenge.\n\
         2. `charge`: sign a TIP-20 transfer of the challenge's `amount` (the worst case of \
         this exact body: input tokens counted, output at its cap) and send the same request \
         again with `Authorization: Payment <credential>`. A short prompt without \
         `max_tokens` pays for the model's whole output limit: set `max_tokens`.\n\
         3. `session`: open an escrow channel once, then pay each request with a signed \
         cumulative voucher; each request is charged its actual usage, the rest stays \
         available. Closing the channel refunds what was not spent.\n\
         4. A paid answer carries `Payment-Receipt`. Errors are RFC 9457 problem+json with a \
         stable `code`; payment failures are 402 with a fresh challenge.\n\n\
         Clients: the reference CLI `npx mppx@0.11.0 <url> -J '<json body>'`, or \
         `tollgate pay` / `tollgate pay proxy` (an SDK points its base URL at the proxy).\n\n\
         ## Routes\n\n",
        realm = config.realm,
        chain_id = chain.chain_id,
        currency = chain.currency.to_checksum(None),
    );
    for route in &config.routes {
        let price = match route.price {
            RoutePrice::Free => "free".to_owned(),
            RoutePrice::Fixed(amount) => format!("charge: {amount} base units per request"),
            RoutePrice::Quoted(_) if config.session.is_some() => {
                "charge or session, quoted per request from the price table below".to_owned()
            }
            RoutePrice::Quoted(_) => {
                "charge, quoted per request from the price table below".to_owned()
            }
        };
        out.push_str(&format!(
            "- `{} {}` — {}; {price}\n",
            route.method,
            route.path,
            summary(route)
        ));
    }
    out.push_str("- `GET /v1/models` and `GET /v1/models/{id}` — the models sold here with their prices (free)\n");
    if !config.routes.iter().any(|r| r.path == COUNT_TOKENS_PATH) {
        let price = match config.claude.count_tokens_charge {
            0 => "free".to_owned(),
            charge => format!("charge: {charge} base units per request"),
        };
        out.push_str(&format!(
            "- `POST {COUNT_TOKENS_PATH}` — count a Claude message's input tokens; {price}\n"
        ));
    }
    if let Some(plans) = &config.plans {
        let names: Vec<&str> = plans.plans.iter().map(|p| p.name.as_str()).collect();
        out.push_str(&format!(
            "- `POST {}` — accountless chat on a plan ({}), session only, vouchers in buckets of {} base units\n",
            crate::plans::PATH,
            names.join(", "),
            plans.voucher_bucket
        ));
    }
    out.push_str("\n## Prices\n\n```\n");
    out.push_str(&tollgate_pricing::listing::render(&config.pricing.table));
    out.push_str("```\n");
    out
}

//! Harness: a real local Tempo chain, the gateway on loopback, and a
//! loopback OpenAI-format upstream that records what it receives.
#![allow(dead_code)]

pub mod faults;
pub mod logs;
pub mod node;
pub mod plans;
pub mod session;
pub mod session_v2;
pub mod traffic;

use std::path::PathBuf;
use std::str::FromStr;

use alloy::signers::local::PrivateKeySigner;
use mpp::client::PaymentProvider;
use mpp::{PaymentChallenge, PaymentCredential};
use tollgate_devnet::{DEV_ACCOUNTS, Devnet, DevnetOptions, PATH_USD};
use tollgate_mock::{MockOptions, MockRecorder};

pub const UPSTREAM_KEY: &str = "sk-upstream-test-key-0123456789";
pub const SECRET: &str = "e2e-challenge-secret-that-is-long-enough-0001";
/// The admin listener's token (with `Options::admin`).
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
pub const PAYER: usize = 0;
pub const RECIPIENT: usize = 1;
pub const SPONSOR: usize = 2;
pub const CHAT_PRICE: u128 = 10_000;
pub const EMBED_PRICE: u128 = 1_000;

#[derive(Clone)]
pub struct Options {
    pub fee_payer: bool,
    pub modes: &'static str,
    /// Points the gateway at this RPC instead of the devnet's.
    pub rpc_url: Option<String>,
    pub ttl_secs: u64,
    /// Reuse this database (restart tests).
    pub db_path: Option<PathBuf>,
    pub secrets: Vec<String>,
    /// Serve chat, embeddings and images for free (forwarding alone).
    pub free: bool,
    /// Price chat, embeddings and images from the price table per request.
    pub quoted: bool,
    /// `payments.settle = "after_upstream"`.
    pub settle_after_upstream: bool,
    /// Offer sessions on quoted routes (needs [`Harness::start_sessions`]).
    pub session: bool,
    /// Extra `[session]` keys.
    pub session_extra: String,
    /// Give the gateway the recipient's key to settle, close and refund.
    pub operator: bool,
    /// A `[plans]` section (the plan endpoint), verbatim.
    pub plans: Option<String>,
    /// Other sections (e.g. `[claude]`), verbatim, at the end.
    pub extra: String,
    /// Send upstream calls here instead of the recording mock.
    pub upstream_url: Option<String>,
    /// The upstreams' `idle_timeout_secs`.
    pub upstream_idle_secs: Option<u64>,
    /// Serve the admin listener (metrics, dashboard) with [`ADMIN_TOKEN`].
    pub admin: bool,
    /// Extra `[chain]` keys.
    pub chain_extra: String,
    /// Store the ledger in this PostgreSQL database instead of SQLite.
    pub pg_url: Option<String>,
    /// `[store] instance_id` (a restart under it releases its own holds).
    pub instance_id: Option<String>,
    /// `[store] lease_secs`.
    pub lease_secs: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fee_payer: false,
            modes: r#"["pull", "push"]"#,
            rpc_url: None,
            ttl_secs: 300,
            db_path: None,
            secrets: vec![SECRET.to_owned()],
            free: false,
            quoted: false,
            settle_after_upstream: false,
            session: false,
            session_extra: String::new(),
            operator: true,
            plans: None,
            extra: String::new(),
            upstream_url: None,
            upstream_idle_secs: None,
            admin: false,
            chain_extra: String::new(),
            pg_url: None,
            instance_id: None,
            lease_secs: None,
        }
    }
}

pub struct Gateway {
    pub url: String,
    /// The admin listener, with `Options::admin`.
    pub admin_url: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        if let Some(admin) = self.admin_task.take() {
            admin.abort();
        }
    }
}

pub struct Harness {
    pub devnet: Devnet,
    pub upstream_url: String,
    pub upstream: MockRecorder,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(MockOptions::default()).await
    }

    pub async fn start_with(mock: MockOptions) -> Self {
        Self::launch(mock, false).await
    }

    /// A devnet with the session escrow deployed.
    pub async fn start_sessions(mock: MockOptions) -> Self {
        Self::launch(mock, true).await
    }

    async fn launch(mock: MockOptions, escrow: bool) -> Self {
        logs::install();
        let devnet = Devnet::start(DevnetOptions {
            escrow,
            ..DevnetOptions::default()
        })
        .await
        .expect("devnet starts");
        let (router, upstream) = tollgate_mock::router(mock);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            devnet,
            upstream_url,
            upstream,
            dir: tempfile::tempdir().unwrap(),
            // Bounded, so a gateway that never answers fails the test
            // instead of stalling the whole run.
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    pub fn config_text(&self, options: &Options) -> String {
        let rpc = options
            .rpc_url
            .clone()
            .unwrap_or_else(|| self.devnet.rpc_url());
        let db = options
            .db_path
            .clone()
            .unwrap_or_else(|| self.dir.path().join("tollgate.db"));
        let secrets: Vec<String> = options
            .secrets
            .iter()
            .enumerate()
            .map(|(i, _)| format!("{{ env = \"E2E_SECRET_{i}\" }}"))
            .collect();
        let session = if options.session {
            format!(
                "[session]\nescrow = \"{}\"\n{}fee_token = \"{}\"\n{}\n",
                self.devnet.escrow().expect("started with sessions"),
                if options.operator {
                    "operator_key = { env = \"E2E_OPERATOR_KEY\" }\n"
                } else {
                    ""
                },
                tollgate_devnet::ALPHA_USD,
                if options.session_extra.contains("settle_interval_secs") {
                    options.session_extra.clone()
                } else {
                    format!("settle_interval_secs = 3600\n{}", options.session_extra)
                }
            )
        } else {
            String::new()
        };
        let fee_payer = if options.fee_payer {
            "[chain.fee_payer]\nprivate_key = { env = \"E2E_SPONSOR_KEY\" }\n"
        } else {
            ""
        };
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
realm = "tollgate.test"
max_body_bytes = 65536

[payments]
challenge_secrets = [{secrets}]
challenge_ttl_secs = {ttl}
settle = "{settle}"
{refunds}

[chain]
rpc_url = "{rpc}"
chain_id = 42431
currency = "{PATH_USD}"
recipient = "{recipient}"
rpc_timeout_secs = 10
submission_modes = {modes}
{chain_extra}
{fee_payer}
{session}
[store]
{store}

[upstreams.openai]
kind = "openai_compatible"
base_url = "{upstream}"
api_key = {{ env = "E2E_UPSTREAM_KEY" }}
{idle}
# The same loopback mock, spoken to in Anthropic's Messages format.
[upstreams.claude]
kind = "anthropic"
base_url = "{upstream}"
api_key = {{ env = "E2E_UPSTREAM_KEY" }}
{idle}

[[routes]]
method = "POST"
path = "/v1/chat/completions"
upstream = "openai"
{chat_price}
description = "Chat completion"
model_upstreams = {{ "claude-" = "claude" }}

[[routes]]
method = "POST"
path = "/v1/messages"
upstream = "claude"
{messages_price}

[[routes]]
method = "POST"
path = "/v1/embeddings"
upstream = "openai"
{embed_price}

[[routes]]
method = "POST"
path = "/v1/images/generations"
upstream = "openai"
{image_price}

[[routes]]
method = "POST"
path = "/v1/responses"
upstream = "openai"
{responses_price}

[[routes]]
method = "POST"
path = "/v1/audio/speech"
upstream = "openai"
{speech_price}

[[routes]]
method = "POST"
path = "/v1/audio/transcriptions"
upstream = "openai"
{transcription_price}

{models_route}
{plans}
{admin}
{extra}"#,
            secrets = secrets.join(", "),
            ttl = options.ttl_secs,
            settle = if options.settle_after_upstream {
                "after_upstream"
            } else {
                "before_upstream"
            },
            recipient = DEV_ACCOUNTS[RECIPIENT].address,
            // Refunds pay their fees in another token, so the pathUSD
            // accounting of payer and recipient stays exact.
            refunds = if options.operator {
                format!(
                    "refund_key = {{ env = \"E2E_OPERATOR_KEY\" }}\nrefund_fee_token = \"{}\"\n",
                    tollgate_devnet::ALPHA_USD
                )
            } else {
                String::new()
            },
            modes = options.modes,
            store = store_keys(options, &db),
            upstream = options
                .upstream_url
                .as_deref()
                .unwrap_or(&self.upstream_url),
            idle = options
                .upstream_idle_secs
                .map(|s| format!("idle_timeout_secs = {s}\n"))
                .unwrap_or_default(),
            chat_price = match (options.free, options.quoted) {
                (true, _) => "free = true".to_owned(),
                (false, true) => "quote = \"chat\"".to_owned(),
                (false, false) => format!("charge = {CHAT_PRICE}"),
            },
            messages_price = match (options.free, options.quoted) {
                (true, _) => "free = true".to_owned(),
                (false, true) => "quote = \"messages\"".to_owned(),
                (false, false) => format!("charge = {CHAT_PRICE}"),
            },
            embed_price = match (options.free, options.quoted) {
                (true, _) => "free = true".to_owned(),
                (false, true) => "quote = \"embeddings\"".to_owned(),
                (false, false) => format!("charge = {EMBED_PRICE}"),
            },
            image_price = if options.free {
                "free = true"
            } else {
                "quote = \"images\""
            },
            responses_price = if options.free {
                "free = true"
            } else {
                "quote = \"responses\""
            },
            speech_price = if options.free {
                "free = true"
            } else {
                "quote = \"speech\""
            },
            transcription_price = if options.free {
                "free = true"
            } else {
                "quote = \"transcription\""
            },
            plans = options.plans.clone().unwrap_or_default(),
            extra = options.extra,
            chain_extra = options.chain_extra,
            admin = if options.admin {
                "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = { env = \"E2E_ADMIN_TOKEN\" }\n"
            } else {
                ""
            },
            models_route = if options.free || options.quoted {
                ""
            } else {
                "[[routes]]\nmethod = \"GET\"\npath = \"/v1/models\"\nupstream = \"openai\"\ncharge = 0\n"
            },
        )
    }

    pub async fn gateway(&self, options: &Options) -> Gateway {
        let mut env: Vec<(String, String)> = options
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("E2E_SECRET_{i}"), s.clone()))
            .collect();
        env.push(("E2E_UPSTREAM_KEY".into(), UPSTREAM_KEY.into()));
        if let Some(url) = &options.pg_url {
            env.push(("E2E_PG_URL".into(), url.clone()));
        }
        env.push((
            "E2E_OPERATOR_KEY".into(),
            DEV_ACCOUNTS[RECIPIENT].private_key.into(),
        ));
        env.push((
            "E2E_SPONSOR_KEY".into(),
            DEV_ACCOUNTS[SPONSOR].private_key.into(),
        ));
        env.push(("E2E_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()));
        let config =
            tollgate_server::Config::from_toml(&self.config_text(options), self.dir.path(), env)
                .expect("valid config");
        let app = tollgate_server::build_app(&config, tollgate_server::BuildOptions::default())
            .await
            .expect("gateway builds");
        let router = app.public;
        let (admin_url, admin_task) = match app.admin {
            Some(admin) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                let task = tokio::spawn(async move {
                    let _ = axum::serve(listener, admin).await;
                });
                (Some(url), Some(task))
            }
            None => (None, None),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tollgate_server::serve(listener, router, async {
                let _ = rx.await;
            })
            .await;
        });
        Gateway {
            url,
            admin_url,
            shutdown: Some(tx),
            task,
            admin_task,
        }
    }

    /// The gateway's store (SQLite or PostgreSQL), opened as an instance of
    /// its own for assertions.
    pub async fn store(&self, options: &Options) -> std::sync::Arc<dyn tollgate_ledger::Ledger> {
        match &options.pg_url {
            Some(url) => std::sync::Arc::new(
                tollgate_ledger::PgLedger::connect(tollgate_ledger::PgSettings {
                    url: url.clone(),
                    pool_size: 2,
                    instance: tollgate_ledger::Instance::generated(tollgate_ledger::DEFAULT_LEASE),
                    connect_timeout: std::time::Duration::from_secs(5),
                })
                .await
                .unwrap(),
            ),
            None => std::sync::Arc::new(self.ledger(options)),
        }
    }

    /// The gateway's SQLite database, opened read-side for assertions.
    pub fn ledger(&self, options: &Options) -> tollgate_ledger::SqliteLedger {
        let path = options
            .db_path
            .clone()
            .unwrap_or_else(|| self.dir.path().join("tollgate.db"));
        tollgate_ledger::SqliteLedger::open(&path, tollgate_ledger::Durability::Full).unwrap()
    }

    /// The refund of the charge that answered `challenge_id`, once it is
    /// confirmed on chain (panics after 30 s).
    pub async fn refunded(
        &self,
        options: &Options,
        challenge_id: &str,
    ) -> tollgate_ledger::RefundRecord {
        use tollgate_ledger::RefundBook;
        let ledger = self.ledger(options);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let refund = ledger.refund(challenge_id).await.unwrap();
            if let Some(refund) = &refund
                && refund.state == tollgate_ledger::RefundState::Refunded
            {
                return refund.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the charge was refunded on chain: {refund:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The v2 session payer (dev account `PAYER`) on this devnet's reserve.
    pub fn payer_v2(&self) -> session_v2::Payer {
        session_v2::Payer::new(
            PrivateKeySigner::from_str(DEV_ACCOUNTS[PAYER].private_key).unwrap(),
            &self.devnet.rpc_url(),
            self.devnet
                .channel_reserve()
                .expect("the devnet has the reserve"),
        )
    }

    /// The session payer (dev account `PAYER`) on this devnet's escrow.
    pub fn payer(&self) -> session::Payer {
        session::Payer::new(
            signer(PAYER),
            &self.devnet.rpc_url(),
            self.devnet.escrow().expect("started with sessions"),
        )
    }

    /// The gateway's record of `channel`, which must exist.
    pub async fn stored_channel(
        &self,
        options: &Options,
        channel: session::Channel,
    ) -> tollgate_ledger::ChannelRecord {
        self.store(options)
            .await
            .channel(&format!("{:#x}", channel.id))
            .await
            .unwrap()
            .expect("the gateway knows the channel")
    }

    pub async fn balance(&self, account: &str) -> u128 {
        self.devnet
            .rpc()
            .token_balance(PATH_USD, account)
            .await
            .unwrap()
    }
}

/// The `[store]` keys for `options`.
fn store_keys(options: &Options, db: &std::path::Path) -> String {
    let mut keys = match &options.pg_url {
        Some(_) => {
            "kind = \"postgres\"\nurl = { env = \"E2E_PG_URL\" }\npool_size = 8\n".to_owned()
        }
        None => format!("path = \"{}\"\n", db.display()),
    };
    if let Some(id) = &options.instance_id {
        keys.push_str(&format!("instance_id = \"{id}\"\n"));
    }
    if let Some(secs) = options.lease_secs {
        keys.push_str(&format!("lease_secs = {secs}\n"));
    }
    keys
}

/// A fresh PostgreSQL database on the test server (`TOLLGATE_TEST_PG_URL`),
/// or `None` outside CI when no server is configured (the test is then
/// skipped; under CI a missing server fails it).
pub async fn pg_database() -> Option<String> {
    let Some(server) = tollgate_ledger::test_server_url().unwrap() else {
        eprintln!("TOLLGATE_TEST_PG_URL is not set: PostgreSQL test skipped");
        return None;
    };
    Some(tollgate_ledger::test_database(&server).await.unwrap())
}

pub fn chat_body() -> String {
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Explain payment channels in one line."}],"max_tokens":64}"#.to_owned()
}

pub async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

/// The challenges of a 402, parsed (asserting the response shape).
pub fn challenges(response: &reqwest::Response) -> Vec<PaymentChallenge> {
    assert_eq!(response.status(), 402);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().get("payment-receipt").is_none());
    let values: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(!values.is_empty(), "a 402 carries at least one challenge");
    values
        .iter()
        .map(|v| mpp::parse_www_authenticate(v).expect("challenge parses"))
        .collect()
}

/// Asserts a problem+json body and returns it.
pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().get("payment-receipt").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(
        body["type"],
        format!("https://paymentauth.org/problems/{slug}"),
        "problem body: {body}"
    );
    body
}

pub fn signer(index: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_str(DEV_ACCOUNTS[index].private_key).unwrap()
}

/// Pays `challenge` the way an SDK user would (pull mode, or a proof for a
/// zero amount), returning the `Authorization` value.
///
/// Each transfer uses its own 2D nonce lane: anvil stalls on back-to-back
/// expiring-nonce transactions from one sender. Sponsored charges must use
/// the expiring nonce, so they go through the SDK's provider unchanged.
pub async fn pay(challenge: &PaymentChallenge, payer: PrivateKeySigner, rpc_url: &str) -> String {
    let request = challenge.request.decode_value().unwrap();
    let sponsored = request["methodDetails"]["feePayer"] == true;
    if request["amount"] == "0" || sponsored {
        let provider = mpp::client::TempoProvider::new(payer, rpc_url)
            .unwrap()
            .with_expected_chain_id(42431);
        let credential = provider.pay(challenge).await.expect("client pays");
        return mpp::format_authorization(&credential).unwrap();
    }
    let signed = mpp::client::tempo::charge::TempoCharge::from_challenge(challenge)
        .unwrap()
        .sign_with_options(&payer, sign_options(rpc_url, None, None))
        .await
        .expect("client signs");
    mpp::format_authorization(&signed.into_credential()).unwrap()
}

fn sign_options(
    rpc_url: &str,
    gas_limit: Option<u64>,
    valid_before: Option<u64>,
) -> mpp::client::tempo::charge::SignOptions {
    let lane = alloy::primitives::U256::from_be_slice(&alloy::primitives::B256::random()[..8])
        + alloy::primitives::U256::from(1);
    mpp::client::tempo::charge::SignOptions {
        rpc_url: Some(rpc_url.to_owned()),
        nonce_key: Some(lane),
        nonce: Some(0),
        gas_limit,
        valid_before,
        ..Default::default()
    }
}

/// Signs a transfer for `signed_for` (a possibly altered copy of the
/// challenge) but presents it as an answer to `presented`.
pub async fn pay_altered(
    presented: &PaymentChallenge,
    signed_for: &PaymentChallenge,
    payer: PrivateKeySigner,
    rpc_url: &str,
) -> String {
    pay_signed(presented, signed_for, payer, rpc_url, None).await
}

/// Like [`pay_altered`], with an explicit transaction `validBefore`.
pub async fn pay_signed(
    presented: &PaymentChallenge,
    signed_for: &PaymentChallenge,
    payer: PrivateKeySigner,
    rpc_url: &str,
    valid_before: Option<u64>,
) -> String {
    let signed = mpp::client::tempo::charge::TempoCharge::from_challenge(signed_for)
        .unwrap()
        .sign_with_options(&payer, sign_options(rpc_url, Some(300_000), valid_before))
        .await
        .expect("signs");
    let mut credential: PaymentCredential = signed.into_credential();
    credential.challenge = presented.to_echo();
    mpp::format_authorization(&credential).unwrap()
}

/// The challenge with its request object edited by `edit` (id unchanged).
pub fn with_request(
    challenge: &PaymentChallenge,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PaymentChallenge {
    let mut request = challenge.request.decode_value().unwrap();
    edit(&mut request);
    let mut altered = challenge.clone();
    altered.request = mpp::Base64UrlJson::from_value(&request).unwrap();
    altered
}

/// The official `openai` Python package, pinned.
pub const OPENAI_PY: &str = "openai==3.52.0";

/// The official `openai` and `anthropic` Python packages, pinned, installed together.
pub const CLAUDE_SDKS_PY: &str = "openai==3.52.0 anthropic==1.13.0";

/// Installs `requirement` (space-separated pins) from PyPI into the cache (once, atomically) and
/// returns the directory to put on `PYTHONPATH`.
pub async fn python_packages(requirement: &str) -> PathBuf {
    // One installer at a time within this test process; the rename below
    // makes concurrent processes safe.
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = INSTALLING.lock().await;
    let name = requirement.replace(['=', '<', '>', ' '], "-");
    let target = tollgate_devnet::cache_dir().join(format!("python-{name}"));
    if target.join(".complete").exists() {
        return target;
    }
    let staging = target.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let output = tokio::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&staging)
        .args(requirement.split_whitespace())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "pip install {requirement} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(staging.join(".complete"), "").unwrap();
    if std::fs::rename(&staging, &target).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    target
}

/// Runs one of `tests/python/*.py` against `base_url`; returns its JSON output.
pub async fn run_python(script: &str, base_url: &str, site: &std::path::Path) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::process::Command::new("python3")
        .arg(&path)
        .arg(base_url)
        .env("PYTHONPATH", site)
        .env("OPENAI_LOG", "")
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

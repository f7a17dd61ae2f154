//! Start-up validation: good configs load with their defaults, bad values
//! are refused with a message naming the key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::Path;

use tollgate_server::Config;

const SECRET: &str = "a-config-test-secret-of-at-least-32-bytes";

fn base() -> String {
    r#"
[payments]
challenge_secrets = [{ env = "HMAC" }]

[chain]
rpc_url = "http://127.0.0.1:8545"
chain_id = 42431
currency = "0x20c0000000000000000000000000000000000000"
recipient = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

[upstreams.mock]
kind = "mock"

[[routes]]
method = "post"
path = "/v1/chat/completions"
upstream = "mock"
charge = 10000
"#
    .to_owned()
}

fn env() -> Vec<(String, String)> {
    vec![("HMAC".into(), SECRET.into())]
}

fn load(text: &str, env: Vec<(String, String)>) -> Result<Config, String> {
    Config::from_toml(text, Path::new("/nonexistent"), env).map_err(|e| e.to_string())
}

fn error_for(text: &str) -> String {
    load(text, env()).expect_err("config must be refused")
}

#[test]
fn a_minimal_config_loads_with_documented_defaults() {
    let config = load(&base(), env()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8402");
    assert_eq!(config.realm, "127.0.0.1:8402");
    assert_eq!(config.challenge_ttl.as_secs(), 300);
    assert_eq!(config.max_body_bytes, 1024 * 1024);
    assert_eq!(config.chain.rpc_timeout.as_secs(), 30);
    assert!(config.chain.modes.pull && config.chain.modes.push);
    assert!(config.chain.fee_payer.is_none());
    assert_eq!(config.routes[0].method, http::Method::POST);
    assert_eq!(
        config.routes[0].price,
        tollgate_server::config::RoutePrice::Fixed(10_000)
    );
    assert_eq!(config.routes[0].scope(), "POST /v1/chat/completions");
}

#[test]
fn each_bad_value_is_refused_naming_its_key() {
    let cases = [
        (
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
            "0x1234\"",
            "chain.recipient",
        ),
        (
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
            "0x0000000000000000000000000000000000000000\"",
            "chain.recipient",
        ),
        (
            "0x20c0000000000000000000000000000000000000",
            "not-an-address",
            "chain.currency",
        ),
        ("http://127.0.0.1:8545", "ftp://x", "chain.rpc_url"),
        (
            "upstream = \"mock\"",
            "upstream = \"openai\"",
            "routes[0].upstream",
        ),
        ("kind = \"mock\"", "kind = \"llama\"", "upstreams.mock.kind"),
        ("charge = 10000", "charge = 0.5", "routes[0].charge"),
        ("charge = 10000", "charge = \"1.5\"", "routes[0].charge"),
        ("charge = 10000", "free = false", "routes[0].charge"),
        ("charge = 10000", "quote = \"poetry\"", "routes[0].quote"),
        (
            "charge = 10000",
            "charge = 1\nquote = \"chat\"",
            "routes[0].free",
        ),
        (
            "charge = 10000",
            "charge = 1\nfree = true",
            "routes[0].free",
        ),
        (
            "method = \"post\"",
            "method = \"P O S T\"",
            "routes[0].method",
        ),
        (
            "path = \"/v1/chat/completions\"",
            "path = \"v1/{id}\"",
            "routes[0].path",
        ),
        ("chain_id = 42431", "chain_id = 0", "chain.chain_id"),
        (
            "{ env = \"HMAC\" }",
            "{ env = \"MISSING\" }",
            "payments.challenge_secrets[0]",
        ),
        (
            "{ env = \"HMAC\" }",
            "{ env = \"HMAC\", file = \"x\" }",
            "payments.challenge_secrets[0]",
        ),
    ];
    for (from, to, key) in cases {
        let text = base().replace(from, to);
        assert_ne!(text, base(), "case {to} did not apply");
        let error = error_for(&text);
        assert!(error.contains(&format!("`{key}`")), "{to}: {error}");
    }
}

#[test]
fn short_secrets_unknown_keys_and_bad_sections_are_refused() {
    let short = load(&base(), vec![("HMAC".into(), "short".into())]).unwrap_err();
    assert!(
        short.contains("`payments.challenge_secrets[0]`") && short.contains("32"),
        "{short}"
    );

    let rotated = base().replace(
        "[{ env = \"HMAC\" }]",
        "[{ env = \"HMAC\" }, { env = \"OLD\" }]",
    );
    let err = load(
        &rotated,
        vec![
            ("HMAC".into(), SECRET.into()),
            ("OLD".into(), "x".repeat(31)),
        ],
    )
    .unwrap_err();
    assert!(err.contains("`payments.challenge_secrets[1]`"), "{err}");

    let unknown = error_for(&format!(
        "{}\n[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n",
        base()
    ));
    assert!(unknown.contains("listne"), "{unknown}");

    let bad_listen = error_for(&format!("{}\n[server]\nlisten = \"localhost\"\n", base()));
    assert!(bad_listen.contains("`server.listen`"), "{bad_listen}");

    let threads = error_for(&format!("{}\n[server]\nserving_threads = 100000\n", base()));
    assert!(threads.contains("`server.serving_threads`"), "{threads}");
    for ok in [0, 3] {
        let config = load(
            &format!("{}\n[server]\nserving_threads = {ok}\n", base()),
            env(),
        )
        .unwrap();
        assert_eq!(config.connections.serving_threads, ok);
    }

    let bad_store = error_for(&format!("{}\n[store]\nkind = \"mysql\"\n", base()));
    assert!(bad_store.contains("`store.kind`"), "{bad_store}");

    let dup = format!(
        "{}\n[[routes]]\nmethod = \"POST\"\npath = \"/v1/chat/completions\"\nupstream = \"mock\"\nfree = true\n",
        base()
    );
    assert!(error_for(&dup).contains("`routes[1].path`"));

    let pricing = error_for(&format!(
        "{}\n[pricing]\ntable = \"missing.toml\"\n",
        base()
    ));
    assert!(pricing.contains("`pricing.table`"), "{pricing}");
    let markup = error_for(&format!("{}\n[pricing]\nmarkup_bps = 200000\n", base()));
    assert!(markup.contains("`pricing.markup_bps`"), "{markup}");

    let openai = format!("{}\n[upstreams.openai]\nkind = \"openai\"\n", base());
    assert!(error_for(&openai).contains("`upstreams.openai.api_key`"));
}

#[test]
fn environment_overrides_and_secret_files_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hmac.secret"), format!("{SECRET}\n")).unwrap();
    let text = base().replace("{ env = \"HMAC\" }", "{ file = \"hmac.secret\" }");
    let env = vec![
        (
            "TOLLGATE__SERVER__LISTEN".to_owned(),
            "127.0.0.1:9999".to_owned(),
        ),
        (
            "TOLLGATE__CHAIN__RPC_TIMEOUT_SECS".to_owned(),
            "7".to_owned(),
        ),
        (
            "TOLLGATE__PAYMENTS__CHALLENGE_TTL_SECS".to_owned(),
            "60".to_owned(),
        ),
    ];
    let config = Config::from_toml(&text, dir.path(), env).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(config.chain.rpc_timeout.as_secs(), 7);
    assert_eq!(config.challenge_ttl.as_secs(), 60);
    assert_eq!(
        config.store.sqlite_path(),
        Some(dir.path().join("tollgate.db").as_path())
    );

    // A secret file with a short secret is refused like an env one.
    std::fs::write(dir.path().join("hmac.secret"), "short\n").unwrap();
    let err = Config::from_toml(&text, dir.path(), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`payments.challenge_secrets[0]`"), "{err}");
}

#[test]
fn debug_output_never_shows_a_secret() {
    let debug = format!("{:?}", load(&base(), env()).unwrap());
    assert!(
        !debug.contains(SECRET),
        "Debug output must not contain secrets"
    );
}

#[test]
fn the_store_defaults_to_sqlite_and_postgres_takes_a_secret_url() {
    let config = load(&base(), env()).unwrap();
    assert!(matches!(
        config.store.backend,
        tollgate_server::config::StoreBackend::Sqlite { .. }
    ));
    assert_eq!(config.store.instance_id, None);
    assert_eq!(config.store.lease.as_secs(), 15);
    // Two starts without a configured id are two instances.
    assert_ne!(config.store.instance().id, config.store.instance().id);

    let url = "postgres://tollgate:hunter2-password@db.internal:5432/tollgate";
    let text = format!(
        "{}\n[store]\nkind = \"postgres\"\nurl = {{ env = \"DB_URL\" }}\npool_size = 4\ninstance_id = \"gw-2\"\nlease_secs = 9\n",
        base()
    );
    let mut vars = env();
    vars.push(("DB_URL".into(), url.into()));
    let config = load(&text, vars).unwrap();
    let tollgate_server::config::StoreBackend::Postgres {
        url: secret,
        pool_size,
    } = &config.store.backend
    else {
        panic!("a PostgreSQL store")
    };
    assert_eq!((secret.expose(), *pool_size), (url, 4));
    assert_eq!(config.store.instance().id, "gw-2");
    assert_eq!(config.store.lease.as_secs(), 9);
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "the URL is a secret: {debug}");
    assert!(!config.store.describe().contains("hunter2"));
}

#[test]
fn bad_store_values_are_refused_naming_their_key() {
    let cases = [
        ("kind = \"mysql\"", "store.kind"),
        ("kind = \"postgres\"", "store.url"),
        (
            "kind = \"postgres\"\nurl = { env = \"UNSET_DB_URL\" }",
            "store.url",
        ),
        ("kind = \"postgres\"\nurl = { env = \"HMAC\" }", "store.url"),
        (
            "kind = \"postgres\"\nurl = { env = \"GOOD_URL\" }\npool_size = 0",
            "store.pool_size",
        ),
        (
            "kind = \"postgres\"\nurl = { env = \"GOOD_URL\" }\npath = \"x.db\"",
            "store.path",
        ),
        ("url = { env = \"GOOD_URL\" }", "store.url"),
        ("instance_id = \"has space\"", "store.instance_id"),
        ("instance_id = \"\"", "store.instance_id"),
        ("lease_secs = 1", "store.lease_secs"),
        ("durability = \"sometimes\"", "store.durability"),
    ];
    for (store, key) in cases {
        let text = format!("{}\n[store]\n{store}\n", base());
        let mut vars = env();
        vars.push(("GOOD_URL".into(), "postgres://u@127.0.0.1:1/db".into()));
        let err = load(&text, vars).expect_err(store);
        assert!(err.contains(&format!("`{key}`")), "{store}: {err}");
    }
}

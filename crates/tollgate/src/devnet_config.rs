//! The gateway config `tollgate devnet` writes: the running chain, a dev
//! account as recipient, SQLite beside the config, the mock upstream, and
//! paid demo routes.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tollgate_devnet::{DEV_ACCOUNTS, Devnet, PATH_USD};

/// Dev account #1 receives payments; #0 is left to the payer.
pub const RECIPIENT_INDEX: usize = 1;
const SECRET_FILE: &str = "challenge.secret";
/// The recipient's (public, well-known) dev key: it signs session settlements.
const OPERATOR_KEY_FILE: &str = "operator.key";

/// Writes the config (and a fresh challenge secret beside it) and returns
/// the config path.
pub fn write(devnet: &Devnet, path: &Path) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_secret(&dir.join(SECRET_FILE))?;
    let reserve = devnet.channel_reserve();
    if devnet.escrow().is_some() || reserve.is_some() {
        write_private(
            &dir.join(OPERATOR_KEY_FILE),
            DEV_ACCOUNTS[RECIPIENT_INDEX].private_key,
        )?;
    }
    let text = render(
        &devnet.rpc_url(),
        devnet.chain_id(),
        SessionChains {
            escrow: devnet.escrow(),
            reserve,
        },
        free_listen_port()?,
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Which session contracts the chain has.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionChains<'a> {
    /// The v1 escrow contract.
    pub escrow: Option<&'a str>,
    /// The v2 channel reserve.
    pub reserve: Option<&'a str>,
}

impl SessionChains<'_> {
    /// The `[session]` lines naming the protocol and its contracts: v2 where
    /// the chain has the reserve (beside v1 when it has the escrow too).
    fn lines(&self) -> Option<String> {
        match (self.escrow, self.reserve) {
            (Some(escrow), Some(reserve)) => Some(format!(
                "protocol = \"both\"\nescrow = \"{escrow}\"\nreserve = \"{reserve}\""
            )),
            (None, Some(reserve)) => Some(format!("protocol = \"v2\"\nreserve = \"{reserve}\"")),
            (Some(escrow), None) => Some(format!("protocol = \"v1\"\nescrow = \"{escrow}\"")),
            (None, None) => None,
        }
    }
}

pub fn render(rpc_url: &str, chain_id: u64, chains: SessionChains<'_>, port: u16) -> String {
    let recipient = DEV_ACCOUNTS[RECIPIENT_INDEX].address;
    let session = match chains.lines() {
        Some(contracts) => format!(
            r#"
# Channel sessions, offered beside `charge` on every quoted route (v2: the
# TIP-20 channel reserve; v1: the escrow contract).
[session]
{contracts}
suggested_deposit = 5000000
operator_key = {{ file = "{OPERATOR_KEY_FILE}" }}

# The accountless plan endpoint POST /v1/mpp/chat/completions (docs/plans.md),
# backed by the mock acting as an OpenAI-compatible runtime (open models), as
# OpenAI, and as Anthropic.
[plans]
voucher_bucket = 1000000
suggested_deposit = 5000000

[plans.models."Qwen/Qwen3-8B-AWQ"]
upstream = "mock"
input_per_mtok = 50000
output_per_mtok = 200000
context_window = 32768

[plans.models."gpt-4o-mini"]
upstream = "mock"

[plans.models."claude-haiku-4-5"]
upstream = "mock_claude"

[plans.plans.Starter]
models = ["Qwen/Qwen3-8B-AWQ"]
max_input_tokens = 4000
max_output_tokens = 512

[plans.plans.Plus]
models = ["Qwen/Qwen3-8B-AWQ", "gpt-4o-mini"]
max_input_tokens = 32000
max_output_tokens = 1024

[plans.plans.Premium]
models = ["Qwen/Qwen3-8B-AWQ", "gpt-4o-mini", "claude-haiku-4-5"]
max_input_tokens = 100000
max_output_tokens = 4096
price_multiplier_bps = 12000
"#
        ),
        None => String::new(),
    };
    format!(
        r#"# Written by `tollgate devnet`. Every key is documented in docs/configuration.md.
[server]
listen = "127.0.0.1:{port}"
realm = "tollgate.local"
# Audio uploads for transcription can be large.
max_body_bytes = 26214400

[payments]
challenge_secrets = [{{ file = "{SECRET_FILE}" }}]
challenge_ttl_secs = 300

[chain]
rpc_url = "{rpc_url}"
chain_id = {chain_id}
currency = "{PATH_USD}"
recipient = "{recipient}"
{session}
[store]
path = "tollgate.db"

[upstreams.mock]
kind = "mock"

# The same built-in mock, spoken to in Anthropic's Messages format: Claude
# models on /v1/chat/completions are translated to it and back.
[upstreams.mock_claude]
kind = "mock"
protocol = "anthropic"

# Priced per request from the shipped price table (`tollgate prices`).
[[routes]]
method = "POST"
path = "/v1/chat/completions"
upstream = "mock"
quote = "chat"
model_upstreams = {{ "claude-" = "mock_claude" }}

[[routes]]
method = "POST"
path = "/v1/messages"
upstream = "mock_claude"
quote = "messages"

[[routes]]
method = "POST"
path = "/v1/embeddings"
upstream = "mock"
quote = "embeddings"

[[routes]]
method = "POST"
path = "/v1/images/generations"
upstream = "mock"
quote = "images"

[[routes]]
method = "POST"
path = "/v1/responses"
upstream = "mock"
quote = "responses"

[[routes]]
method = "POST"
path = "/v1/audio/speech"
upstream = "mock"
quote = "speech"

[[routes]]
method = "POST"
path = "/v1/audio/transcriptions"
upstream = "mock"
quote = "transcription"
"#
    )
}

fn write_secret(path: &Path) -> anyhow::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &secret)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn free_listen_port() -> anyhow::Result<u16> {
    let preferred = std::net::TcpListener::bind("127.0.0.1:8402");
    let listener = match preferred {
        Ok(l) => l,
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")?,
    };
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_config_loads_and_offers_the_paid_demo_routes() {
        let dir = tempfile::tempdir().unwrap();
        write_secret(&dir.path().join(SECRET_FILE)).unwrap();
        let secret = std::fs::read_to_string(dir.path().join(SECRET_FILE)).unwrap();
        assert_eq!(secret.len(), 64);
        write_private(
            &dir.path().join(OPERATOR_KEY_FILE),
            DEV_ACCOUNTS[RECIPIENT_INDEX].private_key,
        )
        .unwrap();
        let escrow = "0x00000000000000000000000000000000000000e5";
        let text = render(
            "http://127.0.0.1:1234",
            42431,
            SessionChains {
                escrow: Some(escrow),
                reserve: None,
            },
            8402,
        );
        let config = tollgate_server::Config::from_toml(&text, dir.path(), Vec::new()).unwrap();
        let session = config.session.as_ref().expect("sessions are offered");
        assert_eq!(session.escrow.to_string().to_lowercase(), escrow);
        assert!(session.operator.is_some());
        let plans = config.plans.as_ref().expect("the plan endpoint is served");
        let names: Vec<&str> = plans.plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Plus", "Premium", "Starter"]);
        let v2 = render(
            "http://127.0.0.1:1234",
            42431,
            SessionChains {
                escrow: Some(escrow),
                reserve: Some("0x4D50500000000000000000000000000000000000"),
            },
            8402,
        );
        let config_v2 = tollgate_server::Config::from_toml(&v2, dir.path(), Vec::new()).unwrap();
        assert_eq!(
            config_v2.session.as_ref().unwrap().protocols,
            tollgate_payments::session::Protocols::Both
        );
        let without = render(
            "http://127.0.0.1:1234",
            42431,
            SessionChains::default(),
            8402,
        );
        let config_without =
            tollgate_server::Config::from_toml(&without, dir.path(), Vec::new()).unwrap();
        assert!(config_without.session.is_none());
        assert_eq!(config.chain.rpc_url, "http://127.0.0.1:1234");
        assert_eq!(
            config.chain.recipient.to_string(),
            DEV_ACCOUNTS[RECIPIENT_INDEX].address
        );
        let paid: Vec<_> = config
            .routes
            .iter()
            .filter(|r| r.price != tollgate_server::config::RoutePrice::Free)
            .map(|r| r.scope())
            .collect();
        assert_eq!(
            paid,
            [
                "POST /v1/chat/completions",
                "POST /v1/messages",
                "POST /v1/embeddings",
                "POST /v1/images/generations",
                "POST /v1/responses",
                "POST /v1/audio/speech",
                "POST /v1/audio/transcriptions",
            ]
        );
        assert!(!text.contains(&secret), "the secret lives in its own file");
    }
}

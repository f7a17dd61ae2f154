//! `tollgate pay`: a curl-like client that pays HTTP 402 challenges (Tempo
//! charge or session) and retries. The logic lives in `tollgate-client`;
//! this file parses options and prints.
//!
//! Exit status: 0 on success; 1 when nothing could be bought (bad input,
//! a challenge refused by the spend policy, a payment the server refused;
//! the message says whether anything was paid); 22 when the server
//! answered an HTTP error (the body is still printed).

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use tollgate_client::{
    Address, ChargeMode, Client, Config, Error, Event, IntentChoice, Payment, Policy,
    PrivateKeySigner, Request,
};

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Key: $TOLLGATE_PRIVATE_KEY or --key-file (never printed). \
Amounts are base units of the token (pathUSD: 6 decimals)."
)]
pub struct PayArgs {
    #[command(subcommand)]
    command: Option<PayCommand>,
    #[command(flatten)]
    request: RequestArgs,
    #[command(flatten)]
    wallet: WalletArgs,
}

#[derive(Subcommand)]
enum PayCommand {
    /// Close this payer's session channel with the server at URL, for
    /// exactly what was spent; prints the close transaction hash.
    Close {
        /// A session route of the server (it is sent a HEAD for a challenge).
        url: String,
        #[command(flatten)]
        wallet: WalletArgs,
    },
    /// List the session channels in the local state.
    Channels {
        /// Channel state file.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Run a local HTTP proxy that pays for any client (an SDK pointed at
    /// it as its base URL): each request is forwarded to --target with the
    /// same path and query, its 402 paid under the spend options, and the
    /// answer streamed back. Session streams' `payment-need-voucher` events
    /// are answered here and, like `payment-receipt` events, removed from
    /// the stream (the Payment-Receipt header stays; -v prints the stream's
    /// final receipt). Prints the listening address; runs until Ctrl-C.
    Proxy(Box<ProxyArgs>),
}

#[derive(Args)]
struct ProxyArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    /// Not 8402, the gateway's own default, so both run side by side.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8403")]
    listen: String,
    /// The paid server: its base URL, to which the request's path and
    /// query are appended.
    #[arg(long, value_name = "URL")]
    target: String,
    #[command(flatten)]
    spend: SpendArgs,
    #[command(flatten)]
    wallet: WalletArgs,
}

#[derive(Args)]
struct RequestArgs {
    /// The URL to request.
    #[arg(required = true)]
    url: Option<String>,
    /// HTTP method (default: GET, or POST with a body).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body; `@FILE` reads a file (`@-`: stdin).
    #[arg(
        short = 'd',
        long = "data",
        value_name = "DATA",
        conflicts_with = "json"
    )]
    data: Option<String>,
    /// JSON body (`@FILE` reads a file); sets content-type and accept.
    #[arg(long, value_name = "DATA")]
    json: Option<String>,
    /// Write the body to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Include the response status line and headers in the output.
    #[arg(short = 'i', long = "include")]
    include: bool,
    #[command(flatten)]
    spend: SpendArgs,
}

/// How to pay: which offer, spend caps, fees (`pay` and `pay proxy`).
#[derive(Args)]
struct SpendArgs {
    /// Which offer to pay (default: session when a usable channel for the
    /// payee, token and escrow exists in the state, else charge).
    #[arg(long, value_enum)]
    intent: Option<Intent>,
    /// Charge: broadcast the transfer here and send its hash (default:
    /// the server broadcasts the signed transaction).
    #[arg(long)]
    push: bool,
    /// Refuse a challenge above this amount (base units) before signing.
    #[arg(long, value_name = "N")]
    max_amount: Option<u128>,
    /// Session: cap on a channel's deposit (default: the server's
    /// suggestedDeposit).
    #[arg(long, value_name = "N")]
    max_deposit: Option<u128>,
    /// Session: authorize at most N beyond what was spent up front; a
    /// stream asks for the rest as it goes (default: the request's worst
    /// case).
    #[arg(long, value_name = "N")]
    authorize: Option<u128>,
    /// Token paying the fees of this payer's own transactions (default:
    /// the payment token).
    #[arg(long, value_name = "ADDR")]
    fee_token: Option<String>,
}

impl SpendArgs {
    fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        config.policy.max_amount = self.max_amount;
        config.policy.max_deposit = self.max_deposit;
        config.policy.authorize = self.authorize;
        config.intent = match self.intent {
            None => IntentChoice::Auto,
            Some(Intent::Charge) => IntentChoice::Charge,
            Some(Intent::Session) => IntentChoice::Session,
        };
        config.mode = if self.push {
            ChargeMode::Push
        } else {
            ChargeMode::Pull
        };
        config.fee_token = self
            .fee_token
            .as_deref()
            .map(|t| parse_address("--fee-token", t))
            .transpose()?;
        Ok(())
    }
}

#[derive(Args)]
struct WalletArgs {
    /// File holding the payer's private key (else $TOLLGATE_PRIVATE_KEY).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Chain RPC, to sign and broadcast.
    #[arg(long, env = "TOLLGATE_RPC_URL", value_name = "URL")]
    rpc_url: Option<String>,
    /// Channel state file (default: $XDG_DATA_HOME/tollgate/pay.db).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Only pay these recipients / channel payees (repeatable).
    #[arg(long = "allow-recipient", value_name = "ADDR")]
    allow_recipients: Vec<String>,
    /// Only pay in these tokens (repeatable).
    #[arg(long = "allow-token", value_name = "ADDR")]
    allow_tokens: Vec<String>,
    /// Only deposit into these escrow contracts (repeatable).
    #[arg(long = "allow-escrow", value_name = "ADDR")]
    allow_escrows: Vec<String>,
    /// Only pay on this chain.
    #[arg(long, value_name = "N")]
    chain_id: Option<u64>,
    /// Show the decoded challenge, the payment and the receipt on stderr
    /// (never the key, never signatures).
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Intent {
    Charge,
    Session,
}

/// Runs `tollgate pay`; exits the process with its status.
pub async fn run(args: PayArgs) -> anyhow::Result<()> {
    let code = match execute(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tollgate pay: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn execute(args: PayArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(PayCommand::Close { url, wallet }) => close(&url, wallet).await,
        Some(PayCommand::Channels { state }) => channels(state),
        Some(PayCommand::Proxy(args)) => proxy(*args).await,
        None => request(args.request, args.wallet).await,
    }
}

fn parse_address(what: &str, raw: &str) -> anyhow::Result<Address> {
    Address::from_str(raw.trim()).with_context(|| format!("{what} {raw:?} is not an address"))
}

fn load_key(wallet: &WalletArgs) -> anyhow::Result<Option<PrivateKeySigner>> {
    let raw = match &wallet.key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the key file {}", path.display()))?,
        ),
        None => std::env::var("TOLLGATE_PRIVATE_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty()),
    };
    raw.map(|k| {
        // Never echo the key, not even in the error.
        PrivateKeySigner::from_str(k.trim())
            .map_err(|_| anyhow::anyhow!("the private key is not a 32-byte hex key"))
    })
    .transpose()
}

fn config(wallet: &WalletArgs, verbose_out: bool) -> anyhow::Result<Config> {
    let mut config = Config::unsigned();
    config.signer = load_key(wallet)?;
    config.rpc_url = wallet.rpc_url.clone();
    if let Some(state) = &wallet.state {
        config.state_path = state.clone();
    }
    config.policy = Policy {
        allow_recipients: wallet
            .allow_recipients
            .iter()
            .map(|a| parse_address("--allow-recipient", a))
            .collect::<anyhow::Result<_>>()?,
        allow_tokens: wallet
            .allow_tokens
            .iter()
            .map(|a| parse_address("--allow-token", a))
            .collect::<anyhow::Result<_>>()?,
        allow_escrows: wallet
            .allow_escrows
            .iter()
            .map(|a| parse_address("--allow-escrow", a))
            .collect::<anyhow::Result<_>>()?,
        chain_id: wallet.chain_id,
        ..Policy::default()
    };
    if verbose_out {
        config.observer = Some(Arc::new(print_event));
    }
    Ok(config)
}

async fn request(args: RequestArgs, wallet: WalletArgs) -> anyhow::Result<i32> {
    let mut config = config(&wallet, wallet.verbose)?;
    args.spend.apply(&mut config)?;

    let url = args.url.as_deref().unwrap_or_default();
    let url = tollgate_client::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let body = match (&args.data, &args.json) {
        (Some(d), _) | (None, Some(d)) => Some(read_data(d)?),
        (None, None) => None,
    };
    let method = match &args.method {
        Some(m) => tollgate_client::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .with_context(|| format!("{m:?} is not an HTTP method"))?,
        None if body.is_some() => tollgate_client::Method::POST,
        None => tollgate_client::Method::GET,
    };
    let mut request = Request::new(method, url);
    if let Some(body) = body {
        request = if args.json.is_some() {
            request.json(body)
        } else {
            request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        };
    }
    for raw in &args.headers {
        let (name, value) = raw
            .split_once(':')
            .with_context(|| format!("header {raw:?} is not `Name: value`"))?;
        let name = tollgate_client::header::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("bad header name in {raw:?}"))?;
        let value = tollgate_client::header::HeaderValue::from_str(value.trim())
            .with_context(|| format!("bad header value for {name}"))?;
        // An explicit header replaces the defaults (-d/--json content type).
        request.headers.insert(name, value);
    }

    let client = Client::new(config)?;
    let mut response = match client.send(request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tollgate pay: {e}");
            if let Error::Refused { problem, paid, .. } = &e {
                if let Some(paid) = paid {
                    eprintln!("tollgate pay: {}; not retried", sent(paid));
                }
                if let Some(p) = problem
                    && wallet.verbose
                {
                    eprintln!("* problem: {p}");
                }
            }
            return Ok(1);
        }
    };

    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    if args.include {
        write!(out, "{:?} {}\r\n", response.version, response.status)?;
        for (name, value) in &response.headers {
            write!(out, "{name}: ")?;
            out.write_all(value.as_bytes())?;
            write!(out, "\r\n")?;
        }
        write!(out, "\r\n")?;
    }
    while let Some(chunk) = response.body.chunk().await? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    out.flush()?;
    drop(out);
    if wallet.verbose
        && let Some(receipt) = response.body.final_receipt()
    {
        eprintln!("* final receipt: {receipt}");
    }
    if response.status.as_u16() >= 400 {
        eprintln!(
            "tollgate pay: the server answered {}{}",
            response.status,
            if response.paid.is_some() {
                " after the payment was sent"
            } else {
                ""
            }
        );
        return Ok(22);
    }
    Ok(0)
}

/// `tollgate pay proxy`: binds, prints the address, serves until Ctrl-C
/// (or SIGTERM), letting requests under way finish.
async fn proxy(args: ProxyArgs) -> anyhow::Result<i32> {
    let mut config = config(&args.wallet, args.wallet.verbose)?;
    args.spend.apply(&mut config)?;
    let target = tollgate_client::Url::parse(&args.target)
        .with_context(|| format!("--target {:?} is not a URL", args.target))?;
    if !matches!(target.scheme(), "http" | "https") {
        bail!("--target {target} is not an http(s) URL");
    }
    if config.signer.is_none() {
        eprintln!(
            "tollgate pay proxy: no key (TOLLGATE_PRIVATE_KEY or --key-file): requests that need a payment will be refused"
        );
    }
    let client = Client::new(config)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!("tollgate pay proxy: listening on http://{address}, paying for {target}");
    std::io::stdout().flush()?;
    tollgate_client::proxy::serve_with_shutdown(
        listener,
        target,
        client,
        crate::signals::terminated(),
    )
    .await
    .context("serving the proxy")?;
    Ok(0)
}

/// What had been sent when the server refused.
fn sent(paid: &Payment) -> String {
    match paid {
        Payment::Charge {
            tx_hash: Some(tx),
            amount,
            ..
        } => format!("the transfer of {amount} was broadcast (tx {tx})"),
        Payment::Charge { amount, .. } => format!(
            "a signed transfer of {amount} was handed to the server, which may have broadcast it"
        ),
        Payment::Session {
            channel_id,
            cumulative,
            ..
        } => format!("a voucher for cumulative {cumulative} on channel {channel_id:#x} was sent"),
    }
}

fn read_data(raw: &str) -> anyhow::Result<Vec<u8>> {
    match raw.strip_prefix('@') {
        Some("-") => {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut all)?;
            Ok(all)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}")),
        None => Ok(raw.as_bytes().to_vec()),
    }
}

async fn close(url: &str, wallet: WalletArgs) -> anyhow::Result<i32> {
    let url = tollgate_client::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let client = Client::new(config(&wallet, wallet.verbose)?)?;
    match client.close_session(url).await {
        Ok(closed) => {
            eprintln!(
                "closed channel {:#x}: spent {}, close voucher {}; the rest of the deposit returns to the payer",
                closed.channel_id,
                closed
                    .receipt
                    .spent()
                    .map_or_else(|| "?".to_owned(), |s| s.to_string()),
                closed.cumulative
            );
            match closed.tx_hash {
                Some(tx) => println!("{tx}"),
                None => bail!("the close receipt carries no txHash"),
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("tollgate pay close: {e}");
            Ok(1)
        }
    }
}

fn channels(state: Option<PathBuf>) -> anyhow::Result<i32> {
    let path = state.unwrap_or_else(tollgate_client::state::default_path);
    if !path.exists() {
        println!("no channels ({} does not exist)", path.display());
        return Ok(0);
    }
    let state = tollgate_client::State::open(&path)?;
    for c in state.list()? {
        println!(
            "{:#x} {:<7} {} payee {} token {} escrow {} chain {} deposit {} signed {} accepted {} spent {}{}",
            c.channel_id,
            c.status.as_str(),
            c.origin,
            c.payee,
            c.token,
            c.escrow,
            c.chain_id,
            c.deposit,
            c.signed,
            c.accepted,
            c.spent,
            c.close_tx
                .map(|t| format!(" close tx {t}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

/// `-v`: what happens, on stderr. Challenges and receipts hold no secrets;
/// credentials and signatures are never passed here.
fn print_event(event: Event) {
    match event {
        Event::Challenge(c) => {
            let request = c
                .request
                .decode_value()
                .map(|v| v.to_string())
                .unwrap_or_else(|_| "(undecodable)".to_owned());
            eprintln!(
                "* offer: {}/{} id={} realm={} expires={} description={:?} request={request}",
                c.method.as_str(),
                c.intent.as_str(),
                c.id,
                c.realm,
                c.expires.as_deref().unwrap_or("-"),
                c.description.as_deref().unwrap_or(""),
            );
        }
        Event::Selected(c) => eprintln!(
            "* paying offer {}/{} id={}",
            c.method.as_str(),
            c.intent.as_str(),
            c.id
        ),
        Event::Paying(Payment::Charge {
            amount,
            currency,
            recipient,
            chain_id,
            mode,
            tx_hash,
            sponsored,
            ..
        }) => eprintln!(
            "* charge: {amount} of {currency} to {recipient} on chain {chain_id} ({}{}){}",
            mode.as_str(),
            if sponsored { ", fees sponsored" } else { "" },
            tx_hash.map(|h| format!(", tx {h}")).unwrap_or_default()
        ),
        Event::Paying(Payment::Session {
            channel_id,
            opened,
            cumulative,
            deposit,
            top_up,
        }) => eprintln!(
            "* session: {} channel {channel_id:#x} (deposit {deposit}{}), voucher for cumulative {cumulative}",
            if opened { "opening" } else { "using" },
            top_up
                .map(|t| format!(", topped up {t}"))
                .unwrap_or_default()
        ),
        Event::Receipt(r) => eprintln!("* receipt: {r}"),
        Event::NeedVoucher {
            required,
            accepted,
            deposit,
            ..
        } => eprintln!(
            "* stream needs a voucher: required {required} (accepted {accepted}, deposit {deposit})"
        ),
        Event::VoucherSent {
            cumulative,
            receipt,
        } => eprintln!(
            "* voucher sent for cumulative {cumulative}{}",
            receipt.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        Event::StreamReceipt(r) => eprintln!("* stream receipt: {r}"),
        Event::Warning(w) => eprintln!("* warning: {w}"),
    }
}

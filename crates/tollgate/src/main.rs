//! `tollgate`: the gateway's command line. Business logic lives in the
//! library crates; this file only parses arguments and wires them.
#![forbid(unsafe_code)]

mod channels;
mod demo;
mod devnet_config;
mod dir_lock;
mod logging;
mod pay;
mod report;
mod signals;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_devnet::{DEV_ACCOUNTS, Devnet, DevnetOptions, PATH_USD};
use tollgate_server::Config;

use crate::dir_lock::DirLock;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A paid AI gateway speaking the Machine Payments Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Gateway config (TOML).
        #[arg(long, required_unless_present = "devnet")]
        config: Option<PathBuf>,
        /// Start a local chain first and serve the config written for it.
        #[arg(long, conflicts_with = "config")]
        devnet: bool,
        /// Where `--devnet` writes its config, store and secret.
        #[arg(long, default_value = ".tollgate/devnet")]
        devnet_dir: PathBuf,
    },
    /// Print the price table (the shipped one, or a config's with its overrides).
    Prices {
        /// Gateway config whose `[pricing]` section applies.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON (as `GET /v1/models` lists it) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Session channels: list, settle, close (operator tools).
    Channels {
        /// Gateway config (TOML).
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        command: channels::ChannelsCommand,
    },
    /// Revenue by day, route and model, from the ledger (a table, or CSV).
    Report(report::ReportArgs),
    /// Send a request, paying its 402 challenge (charge or session), curl-like.
    Pay(Box<pay::PayArgs>),
    /// See everything working: a local chain, the gateway, and a narrated
    /// walkthrough of a 402, a charge and a session; then keep serving.
    Demo {
        /// Exit after the walkthrough (status 0 only if every step succeeded).
        #[arg(long)]
        no_serve: bool,
        /// Where the demo writes its gateway config, store and channel state.
        #[arg(long, default_value = ".tollgate/demo")]
        dir: PathBuf,
    },
    /// Start a local Tempo chain and write a gateway config for it.
    Devnet {
        /// Loopback port for the chain RPC (a free one by default).
        #[arg(long)]
        port: Option<u16>,
        /// Where to write the gateway config.
        #[arg(long, default_value = ".tollgate/devnet/tollgate.toml")]
        config_out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _logs = match cli.command {
        Command::Demo { .. } => {
            demo::init_logging();
            None
        }
        Command::Serve { .. } => Some(logging::init(true)),
        _ => Some(logging::init(false)),
    };
    match cli.command {
        Command::Serve {
            config: Some(path), ..
        } => {
            let config =
                Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
            serve(config).await
        }
        Command::Serve { devnet_dir, .. } => {
            let _lock = DirLock::acquire(&devnet_dir, "serve --devnet")?;
            let Some(devnet) = until_signal(start_devnet(None)).await? else {
                return Ok(());
            };
            let path = devnet_config::write(&devnet, &devnet_dir.join("tollgate.toml"))?;
            print_devnet(&devnet, &path, false);
            let config = Config::load(&path)?;
            let result = serve(config).await;
            devnet.stop().await;
            result
        }
        Command::Prices { config, json } => {
            let table = match config {
                Some(path) => Config::load(&path)?.pricing.table,
                None => tollgate_pricing::PriceTable::builtin(),
            };
            if json {
                use tollgate_pricing::Endpoint::*;
                let all =
                    tollgate_pricing::listing::models(&table, &[Chat, Embeddings, Images, Speech]);
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", tollgate_pricing::listing::render(&table));
            }
            Ok(())
        }
        Command::Channels { config, command } => channels::run(&config, command).await,
        Command::Report(args) => report::run(args).await,
        Command::Pay(args) => pay::run(*args).await,
        Command::Demo { no_serve, dir } => {
            // A directory that cannot be used is the walkthrough's to report,
            // at the step that needs it; one in use is refused here.
            let _lock = match DirLock::acquire(&dir, "demo") {
                Ok(lock) => Some(lock),
                Err(e) if e.is::<dir_lock::InUse>() => return Err(e),
                Err(_) => None,
            };
            // A signal at any step drops the walkthrough, and with it the
            // chain (its child is killed on drop).
            until_signal(demo::run(no_serve, &dir)).await.map(|_| ())
        }
        Command::Devnet { port, config_out } => {
            let dir = config_out
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let _lock = DirLock::acquire(dir, "devnet")?;
            let Some(mut devnet) = until_signal(start_devnet(port)).await? else {
                return Ok(());
            };
            let path = devnet_config::write(&devnet, &config_out)?;
            print_devnet(&devnet, &path, true);
            tokio::select! {
                status = devnet.wait() => anyhow::bail!("the chain stopped: {status:?}"),
                _ = signals::terminated() => {}
            }
            devnet.stop().await;
            Ok(())
        }
    }
}

/// Runs `work` unless SIGINT, SIGTERM or SIGHUP comes first (`None`); what
/// `work` owns is dropped then, children included.
async fn until_signal<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        done = work => done.map(Some),
        _ = signals::terminated() => {
            eprintln!("stopping (signal received)");
            Ok(None)
        }
    }
}

async fn start_devnet(port: Option<u16>) -> anyhow::Result<Devnet> {
    eprintln!("starting local Tempo chain (installs anvil and solc on first use)…");
    Devnet::start(DevnetOptions {
        port,
        escrow: true,
        ..DevnetOptions::default()
    })
    .await
    .context("starting the local chain")
}

fn print_devnet(devnet: &Devnet, config: &std::path::Path, standalone: bool) {
    println!("Local Tempo chain");
    println!("  rpc:      {}", devnet.rpc_url());
    println!("  chain id: {}", devnet.chain_id());
    println!("  token:    {PATH_USD} (pathUSD, 6 decimals)");
    if let Some(escrow) = devnet.escrow() {
        println!("  escrow:   {escrow} (v1 session escrow, TempoStreamChannel)");
    }
    if let Some(reserve) = devnet.channel_reserve() {
        println!("  reserve:  {reserve} (v2 channel reserve, TIP-1034 stand-in)");
    }
    println!(
        "Development accounts (public test keys, funded with pathUSD; never use for real funds):"
    );
    for (i, account) in DEV_ACCOUNTS.iter().enumerate() {
        let role = if i == devnet_config::RECIPIENT_INDEX {
            "  <- gateway recipient"
        } else {
            ""
        };
        println!("  #{i} {} {}{role}", account.address, account.private_key);
    }
    println!("Gateway config: {}", config.display());
    if standalone {
        println!("  run: tollgate serve --config {}", config.display());
        println!("Press Ctrl-C to stop the chain.");
    }
}

/// Serves the gateway (and its admin listener, when configured) until
/// SIGINT, SIGTERM or SIGHUP, then drains both gracefully.
async fn serve(config: Config) -> anyhow::Result<()> {
    let app = tollgate_server::build_app(&config, gateway_options()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admin = match (app.admin, &config.admin) {
        (Some(router), Some(admin)) => {
            let admin_listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("binding admin.listen {}", admin.listen))?;
            let address = admin_listener.local_addr()?;
            eprintln!("tollgate admin (metrics, dashboard) on http://{address}");
            let mut stopped = stopped.clone();
            // Scrapes and the dashboard need no threads of their own.
            let limits = tollgate_server::ConnectionLimits {
                serving_threads: 0,
                ..Default::default()
            };
            Some(tokio::spawn(tollgate_server::serve_with(
                admin_listener,
                router,
                limits,
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };
    let address = listener.local_addr()?;
    tracing::info!(listen = %address, routes = config.routes.len(), "tollgate serving");
    eprintln!("tollgate listening on http://{address}");
    tollgate_server::serve_with(
        listener,
        app.public,
        config.connections.clone(),
        async move {
            signals::terminated().await;
            let _ = stop.send(true);
        },
    )
    .await?;
    if let Some(admin) = admin {
        admin.await??;
    }
    Ok(())
}

/// The CLI serves `kind = "mock"` upstreams with `tollgate-mock`.
pub(crate) fn gateway_options() -> tollgate_server::BuildOptions {
    tollgate_server::BuildOptions {
        mock: Some(|settings| {
            tollgate_mock::router(tollgate_mock::MockOptions {
                latency: settings.latency,
                chunk_interval: settings.chunk_interval,
                ..tollgate_mock::MockOptions::default()
            })
            .0
        }),
        ..Default::default()
    }
}

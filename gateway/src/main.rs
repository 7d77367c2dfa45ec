//! The `sluice` command: config → logging → start (telemetry, clusters,
//! listeners) → serve → drain.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hyper::Method;
use sluice::{admin_client, Gateway};
use sluice_config::Config;

/// Request buffers, records and delivery reports are allocated on one
/// thread and freed on another at a high rate; mimalloc handles that far
/// better than glibc's malloc (see bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sluice", version, about = "A federated streaming gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file; the built-in defaults (those of config/sluice.toml) when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print it with every default filled in.
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
    },
    /// Inspect and rebalance topic placement through a running gateway's admin API.
    Federation {
        /// Admin listener, `host:port`; defaults to the one in --config, else 127.0.0.1:8444.
        #[arg(long, global = true)]
        admin: Option<String>,
        /// Configuration file to take the admin address from.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: FederationAction,
    },
    /// API keys for `[auth].api_keys`.
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
}

#[derive(Subcommand)]
enum AuthAction {
    /// Print the SHA-256 to put in `key_sha256`, of a key read from standard
    /// input (one line), so the key never lands in shell history.
    HashKey,
    /// Make a new random key; prints the key (give it to the client, once)
    /// and its hash (put it in the config).
    NewKey,
}

#[derive(Subcommand)]
enum FederationAction {
    /// List the topics whose home differs from where the ring and pins put them now.
    Plan,
    /// Compute the plan and start migrating those topics, one by one.
    Apply,
    /// Progress of the last rebalance.
    Status,
    /// Clusters with health, weight, state, topic count and bytes.
    Clusters,
    /// Stop placing topics on a cluster and move its topics away.
    Drain {
        /// The cluster's name.
        cluster: String,
    },
    /// A topic's placement history (its epochs).
    Placement {
        /// The topic.
        topic: String,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config: path } => {
            let config = load(path.as_ref())?;
            sluice::telemetry::logs::init(&config.log);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(config, path))
        }
        Command::CheckConfig { config } => {
            let config = load(Some(&config))?;
            let _ = write!(
                std::io::stdout().lock(),
                "{}",
                toml::to_string_pretty(&config)?
            );
            Ok(())
        }
        Command::Auth { action } => {
            let mut out = std::io::stdout().lock();
            match action {
                AuthAction::HashKey => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the key from standard input")?;
                    let key = line.trim_end_matches(['\n', '\r']);
                    anyhow::ensure!(!key.is_empty(), "no key on standard input");
                    let _ = writeln!(out, "{}", sluice::auth::apikey::hash_key(key));
                }
                AuthAction::NewKey => {
                    let key = sluice::auth::apikey::generate_key()
                        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
                    let _ = writeln!(out, "key        = {key}");
                    let _ = writeln!(
                        out,
                        "key_sha256 = \"{}\"",
                        sluice::auth::apikey::hash_key(&key)
                    );
                }
            }
            Ok(())
        }
        Command::Federation {
            admin,
            config,
            action,
        } => {
            let admin = match admin {
                Some(admin) => admin,
                None => load(config.as_ref())?.admin.address.to_string(),
            };
            let (method, path) = match &action {
                FederationAction::Plan => (Method::POST, "/admin/rebalance/plan".to_owned()),
                FederationAction::Apply => (Method::POST, "/admin/rebalance/apply".to_owned()),
                FederationAction::Status => (Method::GET, "/admin/rebalance".to_owned()),
                FederationAction::Clusters => (Method::GET, "/admin/clusters".to_owned()),
                FederationAction::Drain { cluster } => {
                    (Method::POST, format!("/admin/clusters/{cluster}/drain"))
                }
                FederationAction::Placement { topic } => {
                    (Method::GET, format!("/admin/topics/{topic}/placement"))
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let (status, body) = runtime.block_on(admin_client::call(&admin, method, &path))?;
            // A reader that goes away (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&body)?
            );
            if status >= 400 {
                anyhow::bail!("the admin API answered {status}");
            }
            Ok(())
        }
    }
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await?;
    if let Some(path) = &path {
        gateway.auth().set_source(path);
    }
    #[cfg(unix)]
    {
        // SIGHUP re-reads `[auth]` (ACLs, keys, quotas); connections stay.
        let auth = gateway.auth().clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if let Err(e) = auth.reload() {
                        tracing::error!(error = %e, "reload on SIGHUP failed; keeping the current rules");
                    }
                }
            });
        }
    }
    let scheme = if gateway.tls { "https" } else { "http" };
    // One plain line that scripts and tests can wait for.
    println!(
        "sluice: listening on {scheme}://{} (admin http://{})",
        gateway.addr, gateway.admin_addr
    );
    if let Some(fingerprint) = &gateway.tls_fingerprint {
        println!("sluice: certificate SHA-256 fingerprint {fingerprint}");
    }
    if let Some(ca) = &gateway.generated_ca_file {
        println!(
            "sluice: generated TLS certificate; trust its CA with: curl --cacert {}",
            ca.display()
        );
    }

    let handle = gateway.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        handle.shutdown();
        // A second signal skips the drain.
        wait_for_signal().await;
        tracing::warn!("second signal; exiting without drain");
        std::process::exit(130);
    });
    gateway.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! The `build-cache-proxy` command: `serve` and `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use build_cache_proxy::config::Config;
use build_cache_proxy::daemon::Daemon;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "build-cache-proxy",
    version,
    about = "Node-local cache for CI builds: Gradle build cache and S3, backed by S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon. Without --config it serves a local cache under ./data on 127.0.0.1.
    Serve {
        /// TOML config file (see config/build-cache-proxy.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (with the environment's overrides) and say what is wrong.
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
    /// The node-local address of `[node_local]`: `up` makes it as `serve` does at start,
    /// `down` removes it (the daemon leaves it in place when it stops).
    NodeLocal {
        #[arg(value_enum)]
        action: NodeLocalAction,
        /// TOML config file with `[node_local]`.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NodeLocalAction {
    Up,
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::NodeLocal { action, config } => node_local(action, &config),
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = build_cache_proxy::logging::init(&config.log) {
                eprintln!("invalid configuration: {e}");
                return ExitCode::from(2);
            }
            // Before any thread starts: the node-local address, and dropping privileges.
            let prepared = match build_cache_proxy::node_local::prepare(&config) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("build-cache-proxy: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            // Log lines now go through the writer thread, until this guard drops at exit.
            let _log_writer = build_cache_proxy::logging::start_writer();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config, prepared)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("build-cache-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn node_local(action: NodeLocalAction, file: &std::path::Path) -> ExitCode {
    let config = match Config::load(Some(file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let node = &config.node_local;
    let Ok(address) = node.address.parse() else {
        eprintln!("{}: node_local.address is not set", file.display());
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use build_cache_proxy::node_local::{ensure, remove};
    let done = runtime.block_on(async {
        match action {
            NodeLocalAction::Up => ensure(address, &node.interface)
                .await
                .map(|placement| format!("{address} {placement}")),
            NodeLocalAction::Down => remove(address, &node.interface).await.map(|removed| {
                removed.map_or(format!("{address}: nothing to remove"), |what| {
                    format!("removed {what}")
                })
            }),
        }
    });
    match done {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("node-local address {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Config,
    prepared: build_cache_proxy::node_local::Prepared,
) -> anyhow::Result<()> {
    let daemon = Daemon::start_prepared(&config, prepared).await?;
    // One line on stdout once every listener is bound: people read it, and tests wait for it.
    let show =
        |addr: Option<std::net::SocketAddr>| addr.map_or("off".to_string(), |a| a.to_string());
    println!(
        "build-cache-proxy ready gradle={} s3={} admin={}",
        show(daemon.gradle_addr),
        show(daemon.s3_addr),
        show(daemon.admin_addr)
    );
    tracing::info!(
        gradle = %show(daemon.gradle_addr),
        s3 = %show(daemon.s3_addr),
        admin = %show(daemon.admin_addr),
        "listening"
    );
    wait_for_signal().await?;
    tracing::info!(deadline = ?config.listen.drain_timeout, "shutting down: draining in-flight requests");
    if daemon.stop().await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain deadline passed; exiting with requests still in flight");
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

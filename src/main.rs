use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: a real miss over three regions costs about a fifth
/// less CPU, and under a churn of distinct pages memory levels off about a quarter lower
/// (docs/performance.md, "A cheaper miss").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use vbs_proxy::config::Config;

/// Caching aggregation proxy for the OpenStack Cinder/VBS API: backups, snapshots and volumes
/// of many regions listed as one Cinder would list them, every other call sent to the region
/// that holds its resource.
#[derive(Parser)]
#[command(
    version,
    after_help = "Configuration: config/default.toml lists every key with its default. Any key \
                  can be set from the environment as VBS_PROXY__SECTION__KEY (for example \
                  VBS_PROXY__CACHE__TTL=60s, VBS_PROXY__FLEET__REDIS_URL=redis://...), over the \
                  file. docs/configuration.md explains each."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy.
    Serve {
        /// Configuration file (TOML); keys not set keep their defaults.
        #[arg(long, env = "VBS_PROXY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start three simulated regions and the proxy in front of them, and print curl commands.
    Demo {
        /// Port for the proxy (0 picks a free one).
        #[arg(long, default_value_t = 8776)]
        port: u16,
    },
    /// Validate a configuration file and exit (64 when invalid).
    CheckConfig { file: PathBuf },
}

/// EX_USAGE: what a bad configuration exits with.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file)) {
            Ok(c) => {
                println!("{}: valid ({} regions)", file.display(), c.regions.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("vbs-proxy: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            runtime.block_on(async move {
                let telemetry = vbs_proxy::telemetry::init(&config);
                let config = match vbs_proxy::regions_from_catalog(config).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("vbs-proxy: regions from the catalog: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // Before "serving" is logged: from then on SIGTERM is a graceful shutdown and
                // SIGHUP a reload.
                let shutdown = vbs_proxy::shutdown_signal();
                let reload = vbs_proxy::reload_signal();
                let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("vbs-proxy: cannot listen on {}: {e}", config.server.listen);
                        return ExitCode::FAILURE;
                    }
                };
                let listen = listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::info!(listen = %listen, regions = config.regions.len(), "serving");
                let state = vbs_proxy::AppState::new(config);
                let served = vbs_proxy::serve(state, listener, shutdown, Some(reload)).await;
                telemetry.shutdown();
                match served {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("vbs-proxy: {e}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        #[cfg(feature = "demo")]
        Command::Demo { port } => runtime.block_on(vbs_proxy::demo::run(port)),
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => {
            eprintln!("vbs-proxy: built without the `demo` feature");
            ExitCode::FAILURE
        }
    }
}

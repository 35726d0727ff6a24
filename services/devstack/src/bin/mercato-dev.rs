//! `make dev`: runs the whole store on this machine until Ctrl-C.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mercato_contract::Component;
use mercato_devstack::dev::{Dev, DevOptions, Runner};

#[derive(Debug, Parser)]
#[command(
    name = "mercato-dev",
    about = "Run the whole Mercato store on this machine"
)]
struct Args {
    /// Administrative PostgreSQL URL (`make dev` finds or starts a server and passes it).
    #[arg(long, env = "MERCATO_POSTGRES_URL")]
    postgres_url: String,
    /// Where generated keys and credentials are kept between runs.
    #[arg(long, env = "MERCATO_STATE_DIR", default_value = ".state/dev")]
    state_dir: PathBuf,
    /// Gateway port; auth, product, order, payment and the storefront use the next five; the operational
    /// endpoints (`/metrics`, `/readyz`, `/healthz`) of each are ten ports above its own.
    #[arg(long, env = "PORT_BASE", default_value_t = 8080)]
    port_base: u16,
    /// Prefix of the databases and roles, so another store (`make fuzz`) can run beside it.
    #[arg(long, env = "MERCATO_DB_PREFIX", default_value = "mercato_")]
    db_prefix: String,
    /// An extra flag for one service, as `SERVICE=FLAG` (repeatable), e.g.
    /// `gateway=--rate-limit-per-minute=100000` for `make fuzz`.
    #[arg(long = "service-flag", value_name = "SERVICE=FLAG", value_parser = service_flag)]
    service_flags: Vec<(Component, String)>,
    /// Start from scratch: drop the databases and the generated credentials.
    #[arg(long, env = "RESET", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    reset: bool,
    /// Do not create the demo catalog.
    #[arg(long)]
    no_seed: bool,
    /// Folder of the service binaries (`cargo build --bins` puts them in target/debug).
    #[arg(long, env = "MERCATO_BIN_DIR", default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Run every service inside this one process instead of one process each.
    #[arg(long)]
    in_process: bool,
    /// Log filter.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn service_flag(text: &str) -> Result<(Component, String), String> {
    let (name, flag) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SERVICE=FLAG"))?;
    let component =
        Component::from_name(name).ok_or_else(|| format!("{name:?} is not a service"))?;
    Ok((component, flag.to_string()))
}

fn main() -> ExitCode {
    let args: Args = mercato_kit::config::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let otlp = std::env::var(mercato_contract::env::OTEL_EXPORTER_OTLP_ENDPOINT).ok();
        mercato_kit::telemetry::init(
            mercato_kit::config::LogFormat::Pretty,
            &args.log_level,
            otlp.as_deref(),
            "mercato-dev",
        );
        let options = DevOptions {
            postgres_url: args.postgres_url,
            state_dir: args.state_dir,
            port_base: args.port_base,
            db_prefix: args.db_prefix,
            reset: args.reset,
            seed: !args.no_seed,
            log_format: "pretty".into(),
            log_level: args.log_level,
            extra: args.service_flags.into_iter().fold(
                BTreeMap::new(),
                |mut extra: BTreeMap<Component, Vec<String>>, (c, flag)| {
                    extra.entry(c).or_default().push(flag);
                    extra
                },
            ),
            runner: if args.in_process {
                Runner::InProcess
            } else {
                Runner::Processes {
                    bin_dir: args.bin_dir,
                }
            },
        };
        let dev = match Dev::start(&options).await {
            Ok(dev) => dev,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        println!();
        println!("  Mercato is running.");
        println!("  Shop:     {}/ (open it in a browser)", dev.gateway_url);
        println!("  Gateway:  {}", dev.gateway_url);
        println!(
            "  Admin:    {} / {}",
            dev.admin_username, dev.admin_password
        );
        for c in Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Gateway)
        {
            println!("  {:<9} {}", format!("{c}:"), dev.topology.url(c));
        }
        println!(
            "  Ops:      {}/metrics (and /readyz, /healthz); each service's ten ports above its own",
            dev.topology.ops_url(Component::Gateway)
        );
        println!(
            "  State:    {} (databases {}*; `make dev-reset` starts over)",
            options.state_dir.display(),
            options.db_prefix
        );
        println!(
            "  Try:      curl -s {}/products | python3 -m json.tool",
            dev.gateway_url
        );
        println!("  Ctrl-C stops everything; the data stays for the next `make dev`.");
        println!();
        mercato_kit::server::shutdown_signal().await;
        println!("stopping…");
        dev.stop().await;
        ExitCode::SUCCESS
    })
}

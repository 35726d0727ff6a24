//! `mercato-operator`: runs the Store controller (default), prints the CRD (`crd`), or
//! renders a Store's children (`render`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use mercato_operator::controller::stopped;
use mercato_operator::images::ImageDefaults;
use mercato_operator::leader::{LEASE_DURATION, LeaseLock, RENEW_PERIOD, RETRY_PERIOD};
use mercato_operator::metrics::Metrics;
use mercato_operator::reconciler::Context;
use mercato_operator::server::{Health, router};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mercato-operator",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the Store CustomResourceDefinition as YAML.
    Crd,
    /// Print the rules of the operator's ClusterRole as YAML (the chart includes them).
    Rbac,
    /// Print every object the operator would apply for a Store, as multi-document YAML.
    Render {
        /// The Store manifest.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace of the Store (default: the manifest's, else `default`).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Reconcile Stores in these namespaces only, comma separated (default: every
    /// namespace). The operator then needs permissions in these namespaces only.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Take part in leader election, so that several replicas are safe.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "mercato-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the operator's own, from POD_NAMESPACE, else the
    /// kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in events (default: POD_NAME or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Registry (host and path) of the components' images for Stores that name none:
    /// `<registry>/<component>:<tag>` (default `mercato`).
    #[arg(long, env = "MERCATO_IMAGE_REGISTRY")]
    image_registry: Option<String>,
    /// Tag of those images (default: the operator's version).
    #[arg(long, env = "MERCATO_IMAGE_TAG")]
    image_tag: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "LOG_LEVEL", default_value = "info,kube=warn")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", mercato_operator::crd_yaml()?);
            Ok(())
        }
        Some(Command::Rbac) => {
            print!("{}", mercato_operator::rbac::rules_yaml()?);
            Ok(())
        }
        Some(Command::Render { file, namespace }) => {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            print!(
                "{}",
                mercato_operator::render::render(&yaml, namespace.as_deref())?
            );
            Ok(())
        }
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level).context("invalid --log-level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

#[tokio::main]
async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args)?;
    let images = ImageDefaults::new(args.image_registry.as_deref(), args.image_tag.as_deref())
        .map_err(|e| anyhow::anyhow!("invalid --image-registry/--image-tag (MERCATO_IMAGE_REGISTRY/MERCATO_IMAGE_TAG): {e}"))?;
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mercato-operator".into());
        format!(
            "{host}-{}",
            mercato_contract::credentials::random_secret(6).to_lowercase()
        )
    });

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    info!(addr = %args.http_addr, "serving /metrics, /healthz, /readyz");
    let app = router(Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    let lock = args.leader_election.then(|| {
        let ns = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        LeaseLock::new(
            Api::<Lease>::namespaced(client.clone(), &ns),
            &args.lease_name,
            &identity,
        )
    });

    let result = match &lock {
        Some(lock) => {
            ready.store(true, Ordering::Relaxed);
            lead(
                lock,
                client,
                metrics,
                images,
                &identity,
                &args.watch_namespaces,
                stop_rx.clone(),
            )
            .await
        }
        None => {
            ready.store(true, Ordering::Relaxed);
            let ctx = Context::new(client, metrics, Some(identity.clone())).with_images(images);
            mercato_operator::controller::run_in(ctx, &args.watch_namespaces, stop_rx.clone())
                .await;
            Ok(())
        }
    };

    signals.abort();
    let _ = server.await;
    result
}

/// Waits to become leader, then runs the controller until shutdown. Losing the lease ends
/// the process with an error, so that the pod restarts as a follower.
async fn lead(
    lock: &LeaseLock,
    client: Client,
    metrics: Arc<Metrics>,
    images: ImageDefaults,
    identity: &str,
    namespaces: &[String],
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    info!(identity = lock.identity(), "waiting for leadership");
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
    info!(identity = lock.identity(), "became leader");

    let (lost_tx, lost_rx) = watch::channel(false);
    let ctx = Context::new(client, metrics, Some(identity.to_string())).with_images(images);
    // The controller stops on shutdown or when leadership is lost.
    let (halt_tx, halt_rx) = watch::channel(false);
    let halt = {
        let (stop, lost) = (stop.clone(), lost_rx.clone());
        async move {
            tokio::select! {
                _ = stopped(stop) => {}
                _ = stopped(lost) => {}
            }
            let _ = halt_tx.send(true);
        }
    };
    let controller = mercato_operator::controller::run_in(ctx, namespaces, halt_rx);
    let renew = async {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW_PERIOD) => {}
                _ = stop.changed() => return,
            }
            match lock.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    error!("leadership lost to another replica");
                    let _ = lost_tx.send(true);
                    return;
                }
                Err(e) if last_renewed.elapsed() + RENEW_PERIOD >= LEASE_DURATION => {
                    error!(error = %e, "could not renew the lease in time; stepping down");
                    let _ = lost_tx.send(true);
                    return;
                }
                Err(e) => warn!(error = %e, "lease renewal failed; retrying"),
            }
        }
    };
    tokio::join!(controller, renew, halt);

    if *lost_rx.borrow() {
        anyhow::bail!("lost leadership");
    }
    if let Err(e) = lock.release().await {
        warn!(error = %e, "could not release the lease");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

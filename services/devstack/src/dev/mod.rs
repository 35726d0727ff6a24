//! `make dev`: the whole store on this machine. Prepares one database and one role per
//! service, generates the JWT key pair, client credentials and admin password with the
//! operator's generator (kept under the state folder, so a second run keeps its data),
//! starts every service with the operator's environment contract, waits until the
//! gateway reports all of them ready, and seeds a small demo catalog. One job a module:
//! [`ports`] binds, [`credentials`] keeps secrets and keys, [`databases`] prepares and
//! resets PostgreSQL, [`process`] runs a service, [`seed`] fills the catalog,
//! [`test_store`] wraps it all for a test.

mod credentials;
mod databases;
mod ports;
mod process;
mod seed;
mod test_store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mercato_contract::Component;
use mercato_kit::server::Listeners;
use tokio::net::TcpListener;

pub use credentials::Secrets;
pub use databases::reset;
use process::Running;
pub use seed::DEMO_CATALOG;
pub use test_store::TestStore;

use crate::env::Topology;

/// How to run the store. `Debug` hides the password of the PostgreSQL URL.
#[derive(Clone)]
pub struct DevOptions {
    /// An administrative PostgreSQL URL (a superuser, or one that may create roles).
    pub postgres_url: String,
    /// Where keys and generated credentials are kept between runs.
    pub state_dir: PathBuf,
    /// Gateway port; auth, product, order, payment and the storefront take the next five,
    /// and each one's
    /// operational endpoints are ten above its port. 0: random ports.
    pub port_base: u16,
    /// Prefix of the databases and roles (`mercato_auth`, ...).
    pub db_prefix: String,
    /// Drop the databases and generated credentials first.
    pub reset: bool,
    /// Create the demo catalog when the catalog is empty.
    pub seed: bool,
    pub log_format: String,
    pub log_level: String,
    /// Extra flags per component (tests: cheap hashing, short timeouts).
    pub extra: BTreeMap<Component, Vec<String>>,
    pub runner: Runner,
}

impl std::fmt::Debug for DevOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevOptions")
            .field(
                "postgres_url",
                &mercato_kit::secret::redact_url(&self.postgres_url),
            )
            .field("state_dir", &self.state_dir)
            .field("port_base", &self.port_base)
            .field("db_prefix", &self.db_prefix)
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

/// How the services run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// Each its own process, from the binaries in this folder, configured by environment
    /// variables: exactly what a container gets. `make dev` and the benchmarks.
    Processes { bin_dir: PathBuf },
    /// All inside this process, each on its own port, configured by the same variables
    /// passed as flags. Tests, where starting fast matters.
    InProcess,
}

/// The running store.
pub struct Dev {
    pub topology: Topology,
    pub gateway_url: String,
    pub admin_username: String,
    pub admin_password: String,
    servers: Vec<(Component, Running)>,
    extra: BTreeMap<Component, Vec<String>>,
    runner: Runner,
}

impl std::fmt::Debug for Dev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dev")
            .field("gateway_url", &self.gateway_url)
            .finish_non_exhaustive()
    }
}

/// Start-up order: dependencies first, the gateway last.
const ORDER: [Component; 6] = [
    Component::Auth,
    Component::Product,
    Component::Order,
    Component::Payment,
    Component::Storefront,
    Component::Gateway,
];

impl Dev {
    /// Prepares and starts everything; returns once the gateway reports every service ready.
    pub async fn start(options: &DevOptions) -> anyhow::Result<Dev> {
        if options.reset {
            reset(options).await?;
        }
        let listeners = ports::bind_all(options.port_base).await?;
        std::fs::create_dir_all(&options.state_dir)?;
        let secrets = credentials::read_or_create_secrets(&options.state_dir)?;
        let (private_key_path, jwks_path) = credentials::ensure_keys(&options.state_dir)?;
        let edge_key = credentials::read_or_create_edge_key(&options.state_dir)?;
        let cookie_key = credentials::read_or_create_cookie_key(&options.state_dir)?;
        let database_urls = databases::prepare_databases(options, &secrets).await?;
        let topology = Topology {
            listen: listeners
                .iter()
                .map(|(c, l)| Ok((*c, l.public.local_addr()?)))
                .collect::<std::io::Result<_>>()?,
            ops_listen: listeners
                .iter()
                .map(|(c, l)| Ok((*c, l.ops.local_addr()?)))
                .collect::<std::io::Result<_>>()?,
            database_urls,
            jwks_path,
            private_key_path,
            client_secrets: secrets
                .client_secrets
                .iter()
                .filter_map(|(name, s)| Component::from_name(name).map(|c| (c, s.clone())))
                .collect(),
            admin_username: mercato_contract::DEFAULT_ADMIN_USERNAME.into(),
            admin_email: mercato_contract::DEFAULT_ADMIN_EMAIL.into(),
            admin_password: secrets.admin_password.clone(),
            edge_key,
            cookie_key,
            log_format: options.log_format.clone(),
            log_level: options.log_level.clone(),
        };
        let mut servers = Vec::new();
        let mut listeners = listeners;
        for c in ORDER {
            let listener = listeners
                .remove(&c)
                .ok_or_else(|| anyhow::anyhow!("no listener for {c}"))?;
            servers.push((
                c,
                process::launch(&topology, &options.extra, &options.runner, c, listener).await?,
            ));
        }
        let dev = Dev {
            gateway_url: topology.url(Component::Gateway),
            admin_username: topology.admin_username.clone(),
            admin_password: topology.admin_password.clone(),
            topology,
            servers,
            extra: options.extra.clone(),
            runner: options.runner.clone(),
        };
        dev.wait_ready(Duration::from_secs(60)).await?;
        if options.seed {
            dev.seed().await?;
        }
        Ok(dev)
    }

    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let answer = http
                .get(format!("{}/health", self.gateway_url))
                .send()
                .await;
            if let Ok(r) = &answer
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let body = match answer {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("the store did not become ready within {limit:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops one service (to see how the others cope); its port stays reserved by address.
    pub async fn stop_component(&mut self, component: Component) {
        if let Some(i) = self.servers.iter().position(|(c, _)| *c == component) {
            let (_, server) = self.servers.remove(i);
            server.stop().await;
        }
    }

    /// Starts a stopped service again on its port.
    pub async fn start_component(&mut self, component: Component) -> anyhow::Result<()> {
        self.restart_component(component, &[]).await
    }

    /// Stops a service if it runs and starts it again on its port, with `more` flags
    /// replacing any extra flag of the same name (e.g. to turn a feature on).
    pub async fn restart_component(
        &mut self,
        component: Component,
        more: &[&str],
    ) -> anyhow::Result<()> {
        self.stop_component(component).await;
        let flag = |arg: &str| arg.split('=').next().unwrap_or(arg).to_string();
        let overridden: Vec<String> = more.iter().map(|m| flag(m)).collect();
        let mut extra = self.extra.clone();
        let flags = extra.entry(component).or_default();
        flags.retain(|a| !overridden.contains(&flag(a)));
        flags.extend(more.iter().map(|m| m.to_string()));
        let listeners = Listeners {
            public: TcpListener::bind(self.topology.listen[&component]).await?,
            ops: TcpListener::bind(self.topology.ops_listen[&component]).await?,
        };
        let server =
            process::launch(&self.topology, &extra, &self.runner, component, listeners).await?;
        self.servers.push((component, server));
        Ok(())
    }

    /// The process id of each service run as a process.
    pub fn pids(&self) -> BTreeMap<Component, u32> {
        self.servers
            .iter()
            .filter_map(|(c, r)| r.pid().map(|p| (*c, p)))
            .collect()
    }

    /// Stops every service, the gateway first.
    pub async fn stop(mut self) {
        while let Some((_, server)) = self.servers.pop() {
            server.stop().await;
        }
    }
}

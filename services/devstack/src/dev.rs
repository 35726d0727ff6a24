//! `make dev`: the whole store on this machine. Prepares one database and one role per
//! service, generates the JWT key pair, client credentials and admin password with the
//! operator's generator (kept under the state folder, so a second run keeps its data),
//! starts every service with the operator's environment contract, waits until the
//! gateway reports all of them ready, and seeds a small demo catalog.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mercato_contract::Component;
use mercato_contract::credentials::{SECRET_LEN, generate_jwt_keys, random_secret};
use mercato_contract::secret_keys;
use mercato_kit::server::Spawned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use tokio::net::TcpListener;

use crate::env::{Topology, to_args};

/// How to run the store.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// An administrative PostgreSQL URL (a superuser, or one that may create roles).
    pub postgres_url: String,
    /// Where keys and generated credentials are kept between runs.
    pub state_dir: PathBuf,
    /// Gateway port; auth, product, order and payment take the next four. 0: random ports.
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

/// One running service.
enum Running {
    InProcess(Spawned),
    Process(tokio::process::Child),
}

impl Running {
    async fn stop(self) {
        match self {
            Running::InProcess(server) => server.stop().await,
            Running::Process(mut child) => {
                if let Some(pid) = child.id() {
                    // SIGTERM, so the service drains as it would in a cluster.
                    let _ = tokio::process::Command::new("kill")
                        .arg("-TERM")
                        .arg(pid.to_string())
                        .status()
                        .await;
                }
                if tokio::time::timeout(Duration::from_secs(15), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Running::InProcess(_) => None,
            Running::Process(child) => child.id(),
        }
    }
}

/// Credentials generated once and kept in `<state>/secrets.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub admin_password: String,
    pub client_secrets: BTreeMap<String, String>,
    pub db_passwords: BTreeMap<String, String>,
}

impl Secrets {
    fn generate() -> Self {
        Self {
            admin_password: random_secret(SECRET_LEN),
            client_secrets: Component::ALL
                .into_iter()
                .filter(|c| c.service_client_scopes().is_some())
                .map(|c| (c.name().to_string(), random_secret(SECRET_LEN)))
                .collect(),
            db_passwords: Component::WITH_DATABASE
                .into_iter()
                .map(|c| (c.name().to_string(), random_secret(SECRET_LEN)))
                .collect(),
        }
    }
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
const ORDER: [Component; 5] = [
    Component::Auth,
    Component::Product,
    Component::Order,
    Component::Payment,
    Component::Gateway,
];

fn port_offset(c: Component) -> u16 {
    match c {
        Component::Gateway => 0,
        Component::Auth => 1,
        Component::Product => 2,
        Component::Order => 3,
        Component::Payment => 4,
    }
}

async fn bind_all(port_base: u16) -> anyhow::Result<BTreeMap<Component, TcpListener>> {
    let mut listeners = BTreeMap::new();
    for c in ORDER {
        let port = if port_base == 0 {
            0
        } else {
            port_base + port_offset(c)
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "port {port} ({c}) is not available: {e}. Stop whatever uses it, or pick other ports: PORT_BASE=9080 make dev"
            )
        })?;
        listeners.insert(c, listener);
    }
    Ok(listeners)
}

fn read_or_create_secrets(state: &Path) -> anyhow::Result<Secrets> {
    let path = state.join("secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is damaged ({e}); run `make dev-reset`", path.display())
        });
    }
    let secrets = Secrets::generate();
    write_private(&path, &serde_json::to_string_pretty(&secrets)?)?;
    Ok(secrets)
}

fn ensure_keys(state: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = state.join("keys");
    let private = dir.join(secret_keys::JWT_PRIVATE_KEY);
    let jwks = dir.join(secret_keys::JWKS);
    if !(private.exists() && jwks.exists()) {
        std::fs::create_dir_all(&dir)?;
        let keys = generate_jwt_keys();
        write_private(&private, &keys.private_pem)?;
        std::fs::write(&jwks, &keys.jwks_json)?;
    }
    Ok((private, jwks))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One role and one database per service; returns each service's own URL.
async fn prepare_databases(
    options: &DevOptions,
    secrets: &Secrets,
) -> anyhow::Result<BTreeMap<Component, String>> {
    let mut admin = PgConnection::connect(&options.postgres_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach PostgreSQL at {}: {e}",
                mercato_kit::db::redact(&options.postgres_url)
            )
        })?;
    let mut urls = BTreeMap::new();
    for c in Component::WITH_DATABASE {
        let name = format!("{}{}", options.db_prefix, c.name());
        let password = secrets
            .db_passwords
            .get(c.name())
            .ok_or_else(|| anyhow::anyhow!("no database password for {c}; run `make dev-reset`"))?;
        let role_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        let verb = if role_exists { "ALTER" } else { "CREATE" };
        admin
            .execute(
                format!(
                    "{verb} ROLE {} LOGIN PASSWORD {}",
                    quote_ident(&name),
                    quote_literal(password)
                )
                .as_str(),
            )
            .await?;
        let db_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await?;
        if !db_exists {
            admin
                .execute(
                    format!(
                        "CREATE DATABASE {} OWNER {}",
                        quote_ident(&name),
                        quote_ident(&name)
                    )
                    .as_str(),
                )
                .await?;
        }
        // Some clusters' template leaves `public` to the bootstrap superuser; hand it over.
        let mut in_db = url::Url::parse(&options.postgres_url)?;
        in_db.set_path(&name);
        let mut conn = PgConnection::connect(in_db.as_str()).await?;
        conn.execute(format!("ALTER SCHEMA public OWNER TO {}", quote_ident(&name)).as_str())
            .await?;
        conn.close().await?;
        let mut url = url::Url::parse(&options.postgres_url)?;
        url.set_username(&name)
            .map_err(|()| anyhow::anyhow!("cannot set user in the PostgreSQL URL"))?;
        url.set_password(Some(password))
            .map_err(|()| anyhow::anyhow!("cannot set password in the PostgreSQL URL"))?;
        url.set_path(&name);
        urls.insert(c, url.to_string());
    }
    Ok(urls)
}

/// Drops the databases and roles of this prefix, and the generated credentials.
pub async fn reset(options: &DevOptions) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(&options.postgres_url).await?;
    for c in Component::WITH_DATABASE {
        let name = quote_ident(&format!("{}{}", options.db_prefix, c.name()));
        admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        admin
            .execute(format!("DROP ROLE IF EXISTS {name}").as_str())
            .await?;
    }
    for file in ["secrets.json", "keys"] {
        let path = options.state_dir.join(file);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl Dev {
    /// Prepares and starts everything; returns once the gateway reports every service ready.
    pub async fn start(options: &DevOptions) -> anyhow::Result<Dev> {
        if options.reset {
            reset(options).await?;
        }
        let listeners = bind_all(options.port_base).await?;
        std::fs::create_dir_all(&options.state_dir)?;
        let secrets = read_or_create_secrets(&options.state_dir)?;
        let (private_key_path, jwks_path) = ensure_keys(&options.state_dir)?;
        let database_urls = prepare_databases(options, &secrets).await?;
        let topology = Topology {
            listen: listeners
                .iter()
                .map(|(c, l)| Ok((*c, l.local_addr()?)))
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
                launch(&topology, &options.extra, &options.runner, c, listener).await?,
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

    /// Logs in as the first admin through the gateway.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let tokens: Value = reqwest::Client::new()
            .post(format!("{}/auth/login", self.gateway_url))
            .json(&json!({"username": self.admin_username, "password": self.admin_password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("login answered without a token"))
    }

    /// Creates the demo catalog through the gateway, unless there are products already.
    pub async fn seed(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let page: Value = http
            .get(format!("{}/products?limit=1", self.gateway_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
            return Ok(());
        }
        let token = self.admin_token().await?;
        for (name, description, category, price, stock) in DEMO_CATALOG {
            http.post(format!("{}/products", self.gateway_url))
                .bearer_auth(&token)
                .json(
                    &json!({"name": name, "description": description, "category": category,
                              "price": price, "currency": "EUR", "stock": stock}),
                )
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(())
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
        let listener = TcpListener::bind(self.topology.listen[&component]).await?;
        let server = launch(&self.topology, &extra, &self.runner, component, listener).await?;
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

async fn launch(
    topology: &Topology,
    extra: &BTreeMap<Component, Vec<String>>,
    runner: &Runner,
    c: Component,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let flags = extra.get(&c).into_iter().flatten().cloned();
    match runner {
        Runner::InProcess => {
            let mut args = vec![format!("mercato-{}", c.name())];
            args.extend(to_args(&topology.service_env(c)));
            args.extend(flags);
            Ok(Running::InProcess(
                crate::launch::launch(c, args, listener).await?,
            ))
        }
        Runner::Processes { bin_dir } => {
            let binary = bin_dir.join(format!("mercato-{}", c.name()));
            // The child binds the port itself; free it just before.
            drop(listener);
            let mut command = tokio::process::Command::new(&binary);
            command
                .env_clear()
                .envs(std::env::vars_os().filter(|(k, _)| k == "PATH" || k == "HOME"))
                .envs(topology.service_env(c))
                .args(flags)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = command.spawn().map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (build it with `cargo build --bins`)",
                    binary.display()
                )
            })?;
            prefix_lines(c, child.stdout.take());
            prefix_lines(c, child.stderr.take());
            Ok(Running::Process(child))
        }
    }
}

/// Copies a child's output to ours, each line prefixed with the service's name.
fn prefix_lines(c: Component, stream: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) {
    use tokio::io::AsyncBufReadExt;
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{:>8} | {line}", c.name());
        }
    });
}

/// name, description, category, price (cents), stock.
pub const DEMO_CATALOG: [(&str, &str, &str, i64, i64); 6] = [
    ("Espresso cup", "Porcelain, 80 ml", "kitchen", 900, 40),
    (
        "Pour-over kettle",
        "Stainless steel, 1 l",
        "kitchen",
        4_500,
        12,
    ),
    (
        "Linen apron",
        "Natural linen, one size",
        "kitchen",
        2_900,
        20,
    ),
    (
        "Field notebook",
        "Dot grid, 96 pages",
        "stationery",
        1_200,
        60,
    ),
    (
        "Brass pen",
        "Refillable, black ink",
        "stationery",
        3_500,
        15,
    ),
    ("Wool throw", "130 × 170 cm, grey", "home", 8_900, 8),
];

/// A store for a test: its own state folder and database prefix, cheap password hashing,
/// and its databases dropped when it goes out of scope.
pub struct TestStore {
    pub dev: Option<Dev>,
    pub options: DevOptions,
    _state: tempfile::TempDir,
}

impl std::fmt::Debug for TestStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore")
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl TestStore {
    pub async fn start(extra: &[(Component, &[&str])], seed: bool) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let mut flags: BTreeMap<Component, Vec<String>> = BTreeMap::new();
        flags.insert(
            Component::Auth,
            vec![
                "--argon2-memory-kib=64".into(),
                "--argon2-iterations=1".into(),
                "--login-attempts-per-client=1000".into(),
            ],
        );
        for (c, f) in extra {
            flags
                .entry(*c)
                .or_default()
                .extend(f.iter().map(|s| s.to_string()));
        }
        let options = DevOptions {
            postgres_url: mercato_kit::testing::server_url(),
            state_dir: state.path().to_path_buf(),
            port_base: 0,
            db_prefix: format!("e2e_{}_", uuid::Uuid::new_v4().simple()),
            reset: false,
            seed,
            log_format: "pretty".into(),
            log_level: "warn".into(),
            extra: flags,
            runner: Runner::InProcess,
        };
        let mut store = TestStore {
            dev: None,
            options,
            _state: state,
        };
        // Assigned only on success; on failure Drop still removes what was created.
        store.dev = Some(Dev::start(&store.options).await?);
        Ok(store)
    }

    pub fn dev(&mut self) -> &mut Dev {
        self.dev.as_mut().expect("the store is running")
    }

    pub fn gateway_url(&self) -> String {
        self.dev
            .as_ref()
            .map(|d| d.gateway_url.clone())
            .unwrap_or_default()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let options = self.options.clone();
        drop(self.dev.take());
        // Drop cannot await: drop the databases on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(reset(&options)).ok()
        })
        .join();
    }
}

//! Every service in this process, on random local ports, each against a fresh database:
//! what the cross-service tests start. Services can be stopped and started again on the
//! same port, to test faults.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mercato_contract::Component;
use mercato_contract::credentials::{SECRET_LEN, random_secret};
use mercato_kit::server::Spawned;
use mercato_kit::testing::{TestDb, TestKeys};
use tokio::net::TcpListener;

use crate::env::{Topology, to_args};

/// The components the stack runs (the gateway joins when it exists).
pub const COMPONENTS: [Component; 4] = [
    Component::Auth,
    Component::Product,
    Component::Order,
    Component::Payment,
];

/// A running store.
pub struct Stack {
    pub topology: Topology,
    /// Extra flags per component, e.g. short timeouts for fault tests.
    extra: BTreeMap<Component, Vec<String>>,
    servers: BTreeMap<Component, Spawned>,
    pub dbs: BTreeMap<Component, TestDb>,
    _keys: TestKeys,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("listen", &self.topology.listen)
            .finish_non_exhaustive()
    }
}

/// Flags every test stack uses: cheap password hashing, quiet logs.
fn default_extra() -> BTreeMap<Component, Vec<String>> {
    BTreeMap::from([(
        Component::Auth,
        vec![
            "--argon2-memory-kib=64".into(),
            "--argon2-iterations=1".into(),
        ],
    )])
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(BTreeMap::new()).await
    }

    /// Starts every component, with `extra` flags appended to each one's environment.
    pub async fn start_with(extra: BTreeMap<Component, Vec<String>>) -> Self {
        let keys = TestKeys::new();
        let mut dbs = BTreeMap::new();
        for c in COMPONENTS.into_iter().filter(|c| c.has_database()) {
            dbs.insert(c, TestDb::new().await);
        }
        let mut listeners = BTreeMap::new();
        for c in COMPONENTS {
            listeners.insert(c, TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let topology = Topology {
            listen: listeners
                .iter()
                .map(|(c, l)| (*c, l.local_addr().expect("addr")))
                .collect(),
            database_urls: dbs.iter().map(|(c, db)| (*c, db.url.clone())).collect(),
            jwks_path: keys.jwks_path(),
            private_key_path: keys.private_key_path(),
            client_secrets: COMPONENTS
                .into_iter()
                .filter(|c| c.service_client_scopes().is_some())
                .map(|c| (c, random_secret(SECRET_LEN)))
                .collect(),
            admin_username: mercato_contract::DEFAULT_ADMIN_USERNAME.into(),
            admin_email: mercato_contract::DEFAULT_ADMIN_EMAIL.into(),
            admin_password: random_secret(SECRET_LEN),
            log_format: "pretty".into(),
            log_level: "warn".into(),
        };
        let mut merged = default_extra();
        for (c, flags) in extra {
            merged.entry(c).or_default().extend(flags);
        }
        let mut stack = Stack {
            topology,
            extra: merged,
            servers: BTreeMap::new(),
            dbs,
            _keys: keys,
        };
        for (c, listener) in listeners {
            stack.launch(c, listener, &[]).await;
        }
        stack
    }

    fn args(&self, component: Component, more: &[&str]) -> Vec<String> {
        let mut args = vec![format!("mercato-{}", component.name())];
        args.extend(to_args(&self.topology.service_env(component)));
        let flag = |arg: &str| arg.split('=').next().unwrap_or(arg).to_string();
        let overridden: Vec<String> = more.iter().map(|m| flag(m)).collect();
        args.extend(
            self.extra
                .get(&component)
                .into_iter()
                .flatten()
                .filter(|a| !overridden.contains(&flag(a)))
                .cloned(),
        );
        args.extend(more.iter().map(|s| s.to_string()));
        args
    }

    async fn launch(&mut self, component: Component, listener: TcpListener, more: &[&str]) {
        let args = self.args(component, more);
        let server = crate::launch::launch(component, args, listener)
            .await
            .unwrap_or_else(|e| panic!("{component} starts: {e:#}"));
        self.servers.insert(component, server);
    }

    pub fn addr(&self, component: Component) -> SocketAddr {
        self.topology.listen[&component]
    }

    pub fn url(&self, component: Component, path: &str) -> String {
        format!("{}{path}", self.topology.url(component))
    }

    /// Stops a component's HTTP server; its port stays its own for [`Stack::restart`].
    pub async fn stop(&mut self, component: Component) {
        if let Some(server) = self.servers.remove(&component) {
            server.stop().await;
        }
    }

    /// Starts a stopped component again on its port, with `more` flags this time.
    pub async fn restart(&mut self, component: Component, more: &[&str]) {
        self.stop(component).await;
        let listener = TcpListener::bind(self.addr(component))
            .await
            .expect("rebind the same port");
        self.launch(component, listener, more).await;
    }
}

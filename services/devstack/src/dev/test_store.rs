//! A whole store for one test, cleaned up when the test ends.

use std::collections::BTreeMap;

use mercato_contract::Component;

use super::{Dev, DevOptions, Runner, reset};

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
        Self::start_on(&Self::new_prefix(), extra, seed).await
    }

    /// A prefix no other test store uses, for [`TestStore::start_on`].
    pub fn new_prefix() -> String {
        format!("e2e_{}_", uuid::Uuid::new_v4().simple())
    }

    /// A store on the databases `<db_prefix><service>`, used as they are if they exist (a
    /// restored backup, say) and created empty if not; dropped with the store all the same.
    pub async fn start_on(
        db_prefix: &str,
        extra: &[(Component, &[&str])],
        seed: bool,
    ) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let mut flags: BTreeMap<Component, Vec<String>> = BTreeMap::new();
        flags.insert(
            Component::Auth,
            vec![
                "--argon2-memory-kib=64".into(),
                "--argon2-iterations=1".into(),
                "--login-attempts-per-client=1000".into(),
                "--registrations-per-client=1000".into(),
            ],
        );
        // Readiness probed often, so a test sees a stopped service in /health quickly.
        flags.insert(
            Component::Gateway,
            vec!["--health-probe-interval-ms=100".into()],
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
            db_prefix: db_prefix.to_string(),
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

//! Running one service: in this process, or as its own binary with the environment a
//! container gets, its output prefixed with its name; and stopping it as a cluster would.

use std::collections::BTreeMap;
use std::time::Duration;

use mercato_contract::Component;
use mercato_kit::server::{Listeners, Spawned};

use super::Runner;
use crate::env::{Topology, to_args};

/// One running service.
pub(super) enum Running {
    InProcess(Spawned),
    Process(tokio::process::Child),
}

impl Running {
    pub(super) async fn stop(self) {
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

    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            Running::InProcess(_) => None,
            Running::Process(child) => child.id(),
        }
    }
}

pub(super) async fn launch(
    topology: &Topology,
    extra: &BTreeMap<Component, Vec<String>>,
    runner: &Runner,
    c: Component,
    listeners: Listeners,
) -> anyhow::Result<Running> {
    let flags = extra.get(&c).into_iter().flatten().cloned();
    match runner {
        Runner::InProcess => {
            let mut args = vec![format!("mercato-{}", c.name())];
            args.extend(to_args(&topology.service_env(c)));
            args.extend(flags);
            Ok(Running::InProcess(
                crate::launch::launch(c, args, listeners).await?,
            ))
        }
        Runner::Processes { bin_dir } => {
            let binary = bin_dir.join(format!("mercato-{}", c.name()));
            // The child binds the ports itself; free them just before.
            drop(listeners);
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

//! The `http-floor` server (`src/bin/http-floor.rs`) as a child process: the cheapest HTTP
//! answer on this machine, measured like the store's reads.

use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running floor server; it stops when dropped (its stdin closes, and it is killed).
pub struct Floor {
    pub base: String,
    _child: Child,
}

impl Floor {
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("{}: said {line:?}", binary.display()))?;
        Ok(Self {
            base: format!("http://{address}"),
            _child: child,
        })
    }
}

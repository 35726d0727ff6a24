//! The database's own limit for a read: PostgreSQL's `pgbench` running the product
//! service's exact statement (`-M prepared`, as sqlx prepares it), with the connection count
//! of the HTTP scenario it is compared with. Its throughput is pgbench's own `tps`. Its
//! latency columns all hold pgbench's mean latency: pgbench's per-transaction log times
//! transactions with a clock it updates lazily, so most of them read 0 µs at these rates and
//! its percentiles say nothing.

use std::time::Duration;

use crate::load::Stats;

/// Runs `statements` (each one script, picked with equal weight) against `url` on
/// `concurrency` connections for `duration`.
pub async fn run(
    scenario: &str,
    url: &str,
    statements: &[String],
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let dir = tempfile::tempdir()?;
    let mut command = tokio::process::Command::new("pgbench");
    let threads = concurrency.min(std::thread::available_parallelism().map_or(1, |n| n.get()));
    command
        .args(["-n", "-M", "prepared"])
        .arg(format!("--client={concurrency}"))
        .arg(format!("--jobs={threads}"))
        .arg(format!("--time={}", duration.as_secs().max(1)));
    for (i, sql) in statements.iter().enumerate() {
        let script = dir.path().join(format!("statement-{i}.sql"));
        std::fs::write(&script, format!("{sql};\n"))?;
        command.arg(format!("--file={}", script.display()));
    }
    let output = command.arg(url).output().await.map_err(|e| {
        anyhow::anyhow!("cannot run pgbench ({e}): install PostgreSQL's client tools (Debian: postgresql-contrib)")
    })?;
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {stdout}"))?;
    let number = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|t| t.parse::<f64>().ok())
    };
    let done = number("number of transactions actually processed:").unwrap_or(0.0);
    let failed = number("number of failed transactions:").unwrap_or(0.0);
    let mean_ms = number("latency average =")
        .ok_or_else(|| anyhow::anyhow!("no latency average in pgbench's output: {stdout}"))?;
    Ok(Stats {
        scenario: scenario.to_string(),
        concurrency,
        ops: done as u64,
        errors: failed as u64,
        seconds: duration.as_secs_f64(),
        ops_per_sec: tps,
        p50_ms: mean_ms,
        p95_ms: mean_ms,
        p99_ms: mean_ms,
        first_error: None,
    })
}

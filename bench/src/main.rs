//! `make bench`: starts the store as `make dev` does (optimised builds, one process per
//! service), loads it through the gateway, replays one checkout's SQL straight against
//! PostgreSQL for the database's own limit, and prints and saves the results.

mod floor;
mod load;
mod pgbench;
mod reads;
mod replay;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mercato_contract::Component;
use mercato_devstack::dev::{Dev, DevOptions, Runner};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::load::Stats;

#[derive(Debug, Parser)]
#[command(
    name = "mercato-bench",
    about = "Benchmarks a Mercato store running on this machine"
)]
struct Args {
    /// Administrative PostgreSQL URL (`make bench` finds or starts a server).
    #[arg(long, env = "MERCATO_POSTGRES_URL")]
    postgres_url: String,
    /// Folder of the optimised service binaries.
    #[arg(long, env = "MERCATO_BIN_DIR", default_value = "target/perf")]
    bin_dir: PathBuf,
    /// Concurrency levels, comma separated.
    #[arg(long, default_value = "1,8,32")]
    concurrency: String,
    /// Seconds per scenario and level.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results.json")]
    out: PathBuf,
}

/// The catalogue page every list read asks for.
const LIST_PATH: &str = "/products?category=bench&limit=20";

/// Argon2id cost the services run with here: the production defaults (OWASP).
const ARGON2: (u32, u32, u32) = (19_456, 2, 1);

struct Shop {
    http: reqwest::Client,
    gateway: String,
    admin: String,
    /// `GET`s through the gateway and straight to the product service, a connection each
    /// per worker.
    via_gateway: reads::Reads,
    direct: reads::Reads,
}

impl Shop {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.gateway))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Ok(req.send().await?.error_for_status()?.json().await?)
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_table(results: &[Stats]) {
    println!(
        "{:<22} {:>5} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "scenario", "conc", "ops", "ops/s", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    for s in results {
        println!(
            "{:<22} {:>5} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            s.scenario, s.concurrency, s.ops, s.ops_per_sec, s.p50_ms, s.p95_ms, s.p99_ms, s.errors
        );
    }
}

fn find<'a>(results: &'a [Stats], scenario: &str, concurrency: usize) -> Option<&'a Stats> {
    results
        .iter()
        .find(|s| s.scenario == scenario && s.concurrency == concurrency)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let levels: Vec<usize> = args
        .concurrency
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--concurrency: {e}"))?;
    let duration = Duration::from_secs(args.seconds);
    let state = tempfile::tempdir()?;
    let high = u32::MAX.to_string();
    let extra: BTreeMap<Component, Vec<String>> = BTreeMap::from([
        (
            Component::Auth,
            vec![
                format!("--login-attempts-per-username={high}"),
                format!("--login-attempts-per-client={high}"),
                // The bench registers one customer per worker, from one address.
                format!("--registrations-per-client={high}"),
                format!("--argon2-memory-kib={}", ARGON2.0),
                format!("--argon2-iterations={}", ARGON2.1),
                format!("--argon2-parallelism={}", ARGON2.2),
            ],
        ),
        (
            Component::Gateway,
            vec![format!("--rate-limit-per-minute={high}")],
        ),
    ]);
    let options = DevOptions {
        postgres_url: args.postgres_url.clone(),
        state_dir: state.path().to_path_buf(),
        port_base: 0,
        db_prefix: format!("bench_{}_", Uuid::new_v4().simple()),
        reset: false,
        seed: false,
        log_format: "json".into(),
        log_level: "warn".into(),
        extra,
        runner: Runner::Processes {
            bin_dir: args.bin_dir.clone(),
        },
    };
    // The last run's figures, to print this run's checkout rate beside.
    let previous: Option<Value> = std::fs::read_to_string(&args.out)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let dev = Dev::start(&options).await?;
    let outcome = measure(&dev, &levels, duration).await;
    let rss: BTreeMap<String, Option<u64>> = dev
        .pids()
        .into_iter()
        .map(|(c, pid)| (c.name().to_string(), peak_rss_kib(pid)))
        .collect();
    let database_urls = dev.topology.database_urls.clone();
    dev.stop().await;
    let outcome = match outcome {
        Ok((mut results, product_ids, commits)) => measure_database(
            &database_urls,
            product_ids,
            &levels,
            duration,
            &args.bin_dir,
        )
        .await
        .map(|db| {
            results.extend(db);
            (results, commits)
        }),
        Err(e) => Err(e),
    };
    let cleanup = mercato_devstack::dev::reset(&options).await;
    let (results, commits) = outcome?;
    cleanup?;

    println!();
    print_table(&results);
    let ratios = ratios(&results, &levels);
    println!();
    println!(
        "{:<40} {:>9}  {:<10} met",
        "ratio (one run)", "value", "target"
    );
    for r in &ratios {
        let (target, met) = match r.target {
            Some((Goal::AtLeast, t)) => {
                (format!(">= {t}"), if r.value >= t { "yes" } else { "NO" })
            }
            Some((Goal::AtMost, t)) => (format!("<= {t}"), if r.value <= t { "yes" } else { "NO" }),
            None => (String::new(), ""),
        };
        println!("{:<40} {:>9.3}  {target:<10} {met}", r.name, r.value);
    }
    let ratios: serde_json::Map<String, Value> = ratios
        .iter()
        .map(|r| (r.name.clone(), json!(r.value)))
        .collect();
    println!();
    for c in &commits {
        println!(
            "commits per checkout at {:<3} {:.2} ({})",
            c["concurrency"],
            c["total"].as_f64().unwrap_or(0.0),
            c["per_checkout"]
        );
    }
    println!();
    let top = levels.iter().copied().max().unwrap_or(1);
    if let Some(now) = find(&results, "checkout", top) {
        let before = previous.as_ref().and_then(|p| {
            let rows = p["results"].as_array()?;
            let row = rows.iter().find(|r| {
                r["scenario"] == "checkout" && r["concurrency"].as_u64() == Some(top as u64)
            })?;
            Some((
                row["ops_per_sec"].as_f64()?,
                p["commit"].as_str().unwrap_or("?").to_string(),
            ))
        });
        match before {
            Some((was, commit)) => println!(
                "checkouts/s at {top}: {was:.1} (previous {}, commit {commit}) -> {:.1} now ({:.2}x)",
                args.out.display(),
                now.ops_per_sec,
                now.ops_per_sec / was
            ),
            None => println!(
                "checkouts/s at {top}: {:.1} (no previous run)",
                now.ops_per_sec
            ),
        }
    }
    println!();
    for (service, kib) in &rss {
        match kib {
            Some(k) => println!("peak RSS {service:<8} {:>8.1} MiB", *k as f64 / 1024.0),
            None => println!("peak RSS {service:<8}      n/a"),
        }
    }
    let report = json!({
        "commit": commit(),
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        },
        "settings": {
            "seconds_per_run": args.seconds,
            "concurrency": levels,
            "argon2id": {"memory_kib": ARGON2.0, "iterations": ARGON2.1, "parallelism": ARGON2.2},
            "profile": "perf (release optimisations, no LTO)",
            "load_generator": "this process, on the same cores as the services and PostgreSQL",
        },
        "results": results,
        "ratios": ratios,
        "commits_per_checkout": commits,
        "peak_rss_kib": rss,
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", args.out.display());
    Ok(())
}

/// The commit measured (`-dirty` with local changes), so a later run can say what it is
/// compared with; `None` outside a git checkout.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast,
    AtMost,
}

/// One figure held against a limit, and the target the store aims for (issue 15).
#[derive(Debug)]
struct Ratio {
    name: String,
    value: f64,
    target: Option<(Goal, f64)>,
}

/// The store against its limits, at each level: catalogue reads through the gateway against
/// PostgreSQL running the same statement, checkout against its own SQL, the gateway against
/// calling the product service directly, and a storefront page against the API read it
/// makes.
fn ratios(results: &[Stats], levels: &[usize]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut push = |name: String, value: f64, target: Option<(Goal, f64)>| {
        out.push(Ratio {
            name,
            value,
            target,
        });
    };
    for &c in levels {
        let pair = |a: &str, b: &str| Option::zip(find(results, a, c), find(results, b, c));
        for (http, db) in [
            ("catalog-item", "pgbench-item"),
            ("catalog-list", "pgbench-list"),
        ] {
            if let Some((h, d)) = pair(http, db) {
                push(
                    format!("{http}_vs_pgbench_at_{c}"),
                    h.ops_per_sec / d.ops_per_sec,
                    Some((Goal::AtLeast, 1.5)),
                );
            }
        }
        // What the machine allows an HTTP read at all, against the database's answer, and
        // how near the catalogue comes to that floor.
        if let Some((floor, db)) = pair("http-floor", "pgbench-item") {
            push(
                format!("http-floor_vs_pgbench-item_at_{c}"),
                floor.ops_per_sec / db.ops_per_sec,
                None,
            );
        }
        if let Some((item, floor)) = pair("catalog-item", "http-floor") {
            push(
                format!("catalog-item_vs_http-floor_at_{c}"),
                item.ops_per_sec / floor.ops_per_sec,
                None,
            );
        }
        if let Some((shop, db)) = pair("checkout", "db-replay-checkout") {
            push(
                format!("checkout_vs_db_at_{c}"),
                shop.ops_per_sec / db.ops_per_sec,
                None,
            );
        }
        if let Some((gw, direct)) = pair("product-via-gateway", "product-direct") {
            push(
                format!("gateway_throughput_ratio_at_{c}"),
                gw.ops_per_sec / direct.ops_per_sec,
                Some((Goal::AtLeast, 0.93)),
            );
            push(
                format!("gateway_p50_overhead_ms_at_{c}"),
                gw.p50_ms - direct.p50_ms,
                Some((Goal::AtMost, 0.05)),
            );
        }
        if let Some((hop, direct)) = pair("product-via-gateway-no-cache", "product-direct") {
            push(
                format!("gateway_hop_throughput_ratio_at_{c}"),
                hop.ops_per_sec / direct.ops_per_sec,
                None,
            );
            push(
                format!("gateway_hop_p50_overhead_ms_at_{c}"),
                hop.p50_ms - direct.p50_ms,
                None,
            );
        }
        if let Some((page, api)) = pair("storefront", "catalog") {
            push(
                format!("storefront_p50_vs_catalog_api_at_{c}"),
                page.p50_ms / api.p50_ms,
                None,
            );
        }
    }
    out
}

async fn measure(
    dev: &Dev,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<(Vec<Stats>, Vec<Uuid>, Vec<Value>)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let admin_token = dev.admin_token().await?;
    let workers = levels.iter().copied().max().unwrap_or(1);
    let shop = Arc::new(Shop {
        http,
        gateway: dev.gateway_url.clone(),
        admin: admin_token,
        via_gateway: reads::Reads::new(&dev.gateway_url, workers)?,
        direct: reads::Reads::new(&dev.topology.url(Component::Product), workers)?,
    });
    let mut products = Vec::new();
    for i in 0..20 {
        let p = shop
            .post(
                "/products",
                Some(&shop.admin),
                json!({"name": format!("Bench item {i}"), "category": "bench", "price": 1000 + i, "currency": "EUR", "stock": 10_000_000}),
            )
            .await?;
        products.push(p["id"].as_str().unwrap_or_default().to_string());
    }
    let products = Arc::new(products);
    let max = levels.iter().copied().max().unwrap_or(1);
    let mut customers = Vec::new();
    for i in 0..max {
        let name = format!("bench{i}");
        shop.post("/auth/register", None, json!({"username": name, "email": format!("{name}@example.com"), "password": "bench-password"}))
            .await?;
        let tokens = shop
            .post(
                "/auth/login",
                None,
                json!({"username": name, "password": "bench-password"}),
            )
            .await?;
        customers.push(
            tokens["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let customers = Arc::new(customers);
    let mut results = Vec::new();
    let mut commits = Vec::new();

    for &c in levels {
        eprintln!("catalog at concurrency {c}…");
        let (s, p) = (shop.clone(), products.clone());
        results.push(
            load::run("catalog", c, duration, move |w, i| {
                let (s, p) = (s.clone(), p.clone());
                async move {
                    let path = if i % 2 == 0 {
                        LIST_PATH.to_string()
                    } else {
                        format!("/products/{}", p[(w + i as usize) % p.len()])
                    };
                    s.via_gateway.get(w, &path, false).await
                }
            })
            .await,
        );

        // Each half of that mix alone, to hold against pgbench running the same statement.
        for (scenario, list) in [("catalog-item", false), ("catalog-list", true)] {
            eprintln!("{scenario} at concurrency {c}…");
            let (s, p) = (shop.clone(), products.clone());
            results.push(
                load::run(scenario, c, duration, move |w, i| {
                    let (s, p) = (s.clone(), p.clone());
                    async move {
                        let path = if list {
                            LIST_PATH.to_string()
                        } else {
                            format!("/products/{}", p[(w + i as usize) % p.len()])
                        };
                        s.via_gateway.get(w, &path, false).await
                    }
                })
                .await,
            );
        }

        // The same mix as `catalog`, as pages: the storefront renders each from the API,
        // through the gateway (the page request, then its API call, both cross it).
        eprintln!("storefront at concurrency {c}…");
        let (s, p) = (shop.clone(), products.clone());
        results.push(
            load::run("storefront", c, duration, move |w, i| {
                let (s, p) = (s.clone(), p.clone());
                async move {
                    let path = if i % 2 == 0 {
                        "/?category=bench".to_string()
                    } else {
                        format!("/shop/products/{}", p[(w + i as usize) % p.len()])
                    };
                    s.via_gateway.get(w, &path, false).await
                }
            })
            .await,
        );

        eprintln!("checkout at concurrency {c}…");
        let (s, p, u) = (shop.clone(), products.clone(), customers.clone());
        let before = committed(&dev.topology.database_urls).await?;
        results.push(
            load::run("checkout", c, duration, move |w, i| {
                let (s, p, u) = (s.clone(), p.clone(), u.clone());
                async move {
                    let token = &u[w % u.len()];
                    let product = &p[(w + i as usize) % p.len()];
                    let order: Value = json_of(
                        s.http
                            .post(format!("{}/orders", s.gateway))
                            .bearer_auth(token)
                            .json(&json!({"product_id": product, "quantity": 1}))
                            .send()
                            .await,
                    )
                    .await?;
                    let body = json!({"order_id": order["id"], "amount": order["total"], "method": "fake-card"});
                    check(s.http.post(format!("{}/payments", s.gateway)).bearer_auth(token).json(&body).send().await).await
                }
            })
            .await,
        );
        if let Some(run) = results.last() {
            // Backends report their commits within PostgreSQL's 10 s idle flush interval.
            tokio::time::sleep(STATS_FLUSH).await;
            let after = committed(&dev.topology.database_urls).await?;
            let checkouts = (run.ops - run.errors).max(1) as f64;
            let per: BTreeMap<String, f64> = after
                .iter()
                .map(|(db, n)| {
                    (
                        db.clone(),
                        (n - before.get(db).copied().unwrap_or(0)) as f64 / checkouts,
                    )
                })
                .collect();
            commits.push(json!({"concurrency": c, "per_checkout": per,
                                "total": per.values().sum::<f64>()}));
        }

        eprintln!("login at concurrency {c}…");
        let s = shop.clone();
        results.push(
            load::run("login", c, duration, move |w, _| {
                let s = s.clone();
                async move {
                    let body = json!({"username": format!("bench{}", w % max), "password": "bench-password"});
                    check(s.http.post(format!("{}/auth/login", s.gateway)).json(&body).send().await).await
                }
            })
            .await,
        );

        // The same read straight from the service, through the gateway (its cache answers),
        // and through the gateway asking for the service's own answer (the hop itself).
        for (scenario, via_gateway, no_cache) in [
            ("product-direct", false, false),
            ("product-via-gateway", true, false),
            ("product-via-gateway-no-cache", true, true),
        ] {
            eprintln!("{scenario} at concurrency {c}…");
            let (s, p) = (shop.clone(), products.clone());
            results.push(
                load::run(scenario, c, duration, move |w, i| {
                    let (s, p) = (s.clone(), p.clone());
                    async move {
                        let reads = if via_gateway {
                            &s.via_gateway
                        } else {
                            &s.direct
                        };
                        let path = format!("/products/{}", p[(w + i as usize) % p.len()]);
                        reads.get(w, &path, no_cache).await
                    }
                })
                .await,
            );
        }
    }
    let product_ids = products.iter().filter_map(|id| id.parse().ok()).collect();
    Ok((results, product_ids, commits))
}

/// The database alone, once the services have stopped (so their pools neither compete
/// for the server's connections nor for the CPU).
async fn measure_database(
    database_urls: &BTreeMap<Component, String>,
    product_ids: Vec<Uuid>,
    levels: &[usize],
    duration: Duration,
    bin_dir: &std::path::Path,
) -> anyhow::Result<Vec<Stats>> {
    let items: Vec<String> = product_ids.iter().map(|id| item_statement(*id)).collect();
    let list = vec![list_statement()];
    let product_ids = Arc::new(product_ids);
    let floor = floor::Floor::start(&bin_dir.join("http-floor")).await?;
    let floor_reads = Arc::new(reads::Reads::new(
        &floor.base,
        levels.iter().copied().max().unwrap_or(1),
    )?);
    let mut results = Vec::new();
    for &c in levels {
        for (scenario, statements) in [("pgbench-item", &items), ("pgbench-list", &list)] {
            eprintln!("{scenario} at concurrency {c}…");
            let url = &database_urls[&Component::Product];
            results.push(pgbench::run(scenario, url, statements, c, duration).await?);
        }
        eprintln!("http-floor at concurrency {c}…");
        let r = floor_reads.clone();
        results.push(
            load::run("http-floor", c, duration, move |w, _| {
                let r = r.clone();
                async move { r.get(w, "/products/floor", false).await }
            })
            .await,
        );
        eprintln!("db-replay-checkout at concurrency {c}…");
        let pools = replay::Pools {
            product: connect(&database_urls[&Component::Product], c).await?,
            order: connect(&database_urls[&Component::Order], c).await?,
            payment: connect(&database_urls[&Component::Payment], c).await?,
        };
        let (p, ids) = (pools.clone(), product_ids.clone());
        results.push(
            load::run("db-replay-checkout", c, duration, move |w, i| {
                let (pools, ids) = (p.clone(), ids.clone());
                async move {
                    replay::checkout(&pools, ids[(w + i as usize) % ids.len()], Uuid::new_v4())
                        .await
                }
            })
            .await,
        );
        pools.product.close().await;
        pools.order.close().await;
        pools.payment.close().await;
    }
    Ok(results)
}

/// How long PostgreSQL may take to count a backend's commits in `pg_stat_database` (an idle
/// backend reports at most 10 s late).
const STATS_FLUSH: Duration = Duration::from_secs(11);

/// Transactions committed so far in the product, order and payment databases (each reading
/// is one commit more, which is nothing beside thousands of checkouts).
async fn committed(urls: &BTreeMap<Component, String>) -> anyhow::Result<BTreeMap<String, i64>> {
    use sqlx::Connection;
    let mut out = BTreeMap::new();
    for c in [Component::Product, Component::Order, Component::Payment] {
        let mut conn = sqlx::PgConnection::connect(&urls[&c]).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        out.insert(c.name().to_string(), n);
    }
    Ok(out)
}

/// The product service's statement for `GET /products/{id}`, for this product.
fn item_statement(id: Uuid) -> String {
    mercato_product::catalog::ITEM_QUERY.replace("$1", &format!("'{id}'"))
}

/// The product service's statement for `GET /products?category=bench&limit=20`.
fn list_statement() -> String {
    mercato_product::catalog::LIST_QUERY
        .replace("$1", "'bench'")
        .replace("$2", "NULL")
        .replace("$3", "NULL")
        .replace("$4", "20")
}

/// The services' own pool size (`DATABASE_MAX_CONNECTIONS` default), so the database
/// alone is measured under the same connection budget the services have.
const SERVICE_POOL_SIZE: u32 = 10;

async fn connect(url: &str, concurrency: usize) -> anyhow::Result<sqlx::PgPool> {
    let size = u32::try_from(concurrency)
        .unwrap_or(u32::MAX)
        .min(SERVICE_POOL_SIZE);
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await?)
}

async fn check(r: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    // Read the whole body: a request is done when its answer has arrived.
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

async fn json_of(r: reqwest::Result<reqwest::Response>) -> Result<Value, String> {
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

// The load generator shares the cores with the store: the services' allocator keeps its
// own cost down too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Args = mercato_kit::config::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

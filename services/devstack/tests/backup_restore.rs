//! Backups as a platform team meets them: a store takes orders, every database is backed
//! up by the script a Store's backup CronJob runs, the store and its databases are deleted,
//! and a new store restored from those dumps (by the script a new database's init runs)
//! serves the same shopper the same orders, whether the dumps were kept on the backup claim
//! or in an S3-compatible bucket (a real one: s3s-fs, which checks every signature). A
//! database that exists is never overwritten.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::path::Path;
use std::process::Command;

use mercato_backup::testing::S3Server;
use mercato_backup::{Backups, DEFAULT_PART_SIZE, newest_dump};
use mercato_contract::Component;
use mercato_devstack::dev::TestStore;
use mercato_kit::testing::server_url;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use support::send;

/// The scripts the operator ships, as its CronJob and database init run them.
const BACKUP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../operator/src/builders/scripts/backup.sh"
);
const RESTORE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../operator/src/builders/scripts/restore.sh"
);

/// libpq's variables for the database at `url`, as the CronJob sets them from the
/// component's credentials Secret.
fn libpq_env(url: &str) -> Vec<(&'static str, String)> {
    let url = url::Url::parse(url).unwrap();
    vec![
        ("PGHOST", url.host_str().unwrap().to_string()),
        ("PGPORT", url.port().unwrap_or(5432).to_string()),
        ("PGUSER", url.username().to_string()),
        ("PGPASSWORD", url.password().unwrap_or_default().to_string()),
        ("PGDATABASE", url.path().trim_start_matches('/').to_string()),
    ]
}

/// `PATH` with PostgreSQL's client programs on it: where `scripts/postgres.sh` started a
/// throwaway server from binaries off the `PATH`, the newest `/usr/lib/postgresql/*/bin`.
fn path_with_pg_tools() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    if path
        .split(':')
        .any(|dir| Path::new(dir).join("pg_dump").is_file())
    {
        return path;
    }
    let mut versions: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions
        .into_iter()
        .rev()
        .find(|bin| bin.join("pg_dump").is_file())
    {
        Some(bin) => format!("{}:{path}", bin.display()),
        None => path,
    }
}

/// Runs `script` with `env` and no other libpq setting; its exit status and output.
fn run(script: &str, env: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new("sh");
    command.arg(script).env("PATH", path_with_pg_tools());
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGDATA",
    ] {
        command.env_remove(var);
    }
    let out = command.envs(env.iter().cloned()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn login(http: &reqwest::Client, gateway: &str) -> String {
    let body = json!({"username": "keeper", "password": "correct-horse-battery"});
    let tokens = send(
        http,
        http.post(format!("{gateway}/auth/login")).json(&body),
        StatusCode::OK,
    )
    .await;
    tokens["access_token"].as_str().unwrap().to_string()
}

/// The shopper's orders as the API lists them: id, status and total of each.
async fn orders(http: &reqwest::Client, gateway: &str, token: &str) -> Vec<(String, String, i64)> {
    let page = send(
        http,
        http.get(format!("{gateway}/orders")).bearer_auth(token),
        StatusCode::OK,
    )
    .await;
    let mut seen: Vec<(String, String, i64)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_string(),
                o["status"].as_str().unwrap().to_string(),
                o["total"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    seen
}

async fn databases_named(prefix: &str) -> Vec<String> {
    let mut admin = PgConnection::connect(&server_url()).await.unwrap();
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
        .bind(prefix)
        .fetch_all(&mut admin)
        .await
        .unwrap()
}

/// Where the dumps are kept between the backup and the restore.
enum Place {
    /// The backup claim: backup.sh writes there, restore.sh reads there.
    Claim,
    /// A bucket: backup.sh writes into a scratch folder, mercato-backup uploads from it
    /// and, for the restore, fetches the newest back into another.
    Bucket(S3Server),
}

#[tokio::test]
async fn orders_survive_a_backup_the_stores_deletion_and_a_restore_into_a_new_store() {
    orders_survive(Place::Claim).await;
}

#[tokio::test]
async fn orders_survive_a_backup_to_a_bucket_the_stores_deletion_and_a_restore_from_it() {
    orders_survive(Place::Bucket(
        S3Server::start("shop-backups").await.unwrap(),
    ))
    .await;
}

async fn orders_survive(place: Place) {
    let backups = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    // A store with a product and a shopper with two orders, one of them paid.
    let old = TestStore::start(&[], false).await.unwrap();
    let gw = old.gateway_url();
    let admin = old.dev.as_ref().unwrap().admin_token().await.unwrap();
    let product = send(
        &http,
        http.post(format!("{gw}/products")).bearer_auth(&admin).json(
            &json!({"name": "Ledger", "category": "backup", "price": 1500, "currency": "EUR", "stock": 9}),
        ),
        StatusCode::CREATED,
    )
    .await;
    let shopper = json!({"username": "keeper", "email": "keeper@example.com", "password": "correct-horse-battery"});
    send(
        &http,
        http.post(format!("{gw}/auth/register")).json(&shopper),
        StatusCode::CREATED,
    )
    .await;
    let token = login(&http, &gw).await;
    let mut placed = Vec::new();
    for quantity in [1, 2] {
        let order = send(
            &http,
            http.post(format!("{gw}/orders"))
                .bearer_auth(&token)
                .json(&json!({"product_id": product["id"], "quantity": quantity})),
            StatusCode::CREATED,
        )
        .await;
        placed.push(order);
    }
    let pay =
        json!({"order_id": placed[0]["id"], "amount": placed[0]["total"], "method": "fake-card"});
    send(
        &http,
        http.post(format!("{gw}/payments"))
            .bearer_auth(&token)
            .json(&pay),
        StatusCode::CREATED,
    )
    .await;
    let before = mercato_kit::testing::poll(
        100,
        || orders(&http, &gw, &token),
        |o| o.iter().any(|(_, status, _)| status == "PAID"),
    )
    .await;
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().any(|(_, status, _)| status == "PAID"),
        "{before:?}"
    );

    // Every database backed up as the CronJob does it: with the service's own credentials.
    let urls = old.dev.as_ref().unwrap().topology.database_urls.clone();
    for (c, url) in &urls {
        let dir = backups.path().join(c.name());
        let mut env = libpq_env(url);
        env.push(("BACKUP_DIR", dir.display().to_string()));
        let retention = if matches!(place, Place::Bucket(_)) {
            "1"
        } else {
            "3"
        };
        env.push(("BACKUP_RETENTION", retention.into()));
        let (ok, out) = run(BACKUP, &env);
        assert!(ok, "backup of {c}: {out}");
        assert_eq!(dumps(&dir).len(), 1, "{c}: {out}");
        if let Place::Bucket(server) = &place {
            let bucket = Backups::new(&server.target(&format!("demo/{c}"))).unwrap();
            let dump = newest_dump(&dir).unwrap();
            let stored = bucket.upload(&dump, DEFAULT_PART_SIZE).await.unwrap();
            assert_eq!(stored.size, std::fs::metadata(&dump).unwrap().len());
            assert!(bucket.prune(3).await.unwrap().is_empty());
        }
    }
    // The scratch folder goes with the backup's pod: only the bucket keeps the dumps.
    let fetched = tempfile::tempdir().unwrap();
    let restore_from = match &place {
        Place::Claim => backups.path().to_path_buf(),
        Place::Bucket(server) => {
            std::fs::remove_dir_all(backups.path()).unwrap();
            for c in Component::WITH_DATABASE {
                let bucket = Backups::new(&server.target(&format!("demo/{c}"))).unwrap();
                bucket
                    .download("latest", &fetched.path().join(c.name()))
                    .await
                    .unwrap();
            }
            fetched.path().to_path_buf()
        }
    };

    // The store goes, and its databases and roles with it (deletionPolicy: Delete).
    let old_prefix = old.options.db_prefix.clone();
    drop(old);
    assert_eq!(databases_named(&old_prefix).await, Vec::<String>::new());

    // A new store's databases are created empty and restored before any service runs, as
    // a new database's init script does it (as the database's owner, the image's user).
    let prefix = TestStore::new_prefix();
    let mut admin = PgConnection::connect(&server_url()).await.unwrap();
    for c in Component::WITH_DATABASE {
        let name = format!("{prefix}{}", c.name());
        admin
            .execute(format!(r#"CREATE ROLE "{name}" LOGIN"#).as_str())
            .await
            .unwrap();
        admin
            .execute(format!(r#"CREATE DATABASE "{name}" OWNER "{name}""#).as_str())
            .await
            .unwrap();
        let mut url = url::Url::parse(&server_url()).unwrap();
        url.set_path(&name);
        let mut db = PgConnection::connect(url.as_str()).await.unwrap();
        db.execute(format!(r#"ALTER SCHEMA public OWNER TO "{name}""#).as_str())
            .await
            .unwrap();
        let mut env = libpq_env(url.as_str());
        env.retain(|(k, _)| *k == "PGHOST" || *k == "PGPORT");
        env.extend([
            ("POSTGRES_USER", name.clone()),
            ("POSTGRES_DB", name.clone()),
            (
                "RESTORE_DIR",
                restore_from.join(c.name()).display().to_string(),
            ),
            ("RESTORE_FILE", "latest".into()),
        ]);
        let (ok, out) = run(RESTORE, &env);
        assert!(ok, "restore of {c}: {out}");
    }
    let new = TestStore::start_on(&prefix, &[], false).await.unwrap();
    let gw = new.gateway_url();

    // The shopper logs in to the new store and sees the same orders, as they were.
    let token = login(&http, &gw).await;
    assert_eq!(orders(&http, &gw, &token).await, before);
    let item = send(
        &http,
        http.get(format!("{gw}/products/{}", product["id"].as_str().unwrap())),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        item["stock"],
        9 - 3,
        "the stock the orders took stays taken"
    );

    // Restoring again is refused, and changes nothing: a database in use is never
    // overwritten.
    let order_db = new.dev.as_ref().unwrap().topology.database_urls[&Component::Order].clone();
    let name = format!("{prefix}order");
    let mut env = libpq_env(&order_db);
    env.retain(|(k, _)| *k == "PGHOST" || *k == "PGPORT");
    env.extend([
        ("POSTGRES_USER", name.clone()),
        ("POSTGRES_DB", name),
        (
            "RESTORE_DIR",
            restore_from.join("order").display().to_string(),
        ),
        ("RESTORE_FILE", "latest".into()),
    ]);
    let (ok, out) = run(RESTORE, &env);
    assert!(!ok, "a second restore must be refused: {out}");
    assert!(out.contains("never overwritten"), "{out}");
    assert_eq!(orders(&http, &gw, &token).await, before);
}

#[tokio::test]
async fn a_backup_that_cannot_be_made_fails_and_keeps_the_earlier_ones() {
    let store = TestStore::start(&[], false).await.unwrap();
    let url = store.dev.as_ref().unwrap().topology.database_urls[&Component::Product].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut env = libpq_env(&url);
    env.push(("BACKUP_DIR", dir.path().display().to_string()));
    env.push(("BACKUP_RETENTION", "2".into()));
    let (ok, out) = run(BACKUP, &env);
    assert!(ok, "{out}");
    let kept = dumps(dir.path());
    assert_eq!(kept.len(), 1);

    // A database that is not there: nothing new is kept, not even a partial file, and the
    // run fails.
    let mut wrong = env.clone();
    for (k, v) in &mut wrong {
        if *k == "PGDATABASE" {
            *v = "no_such_database".into();
        }
    }
    let (ok, out) = run(BACKUP, &wrong);
    assert!(!ok, "{out}");
    assert_eq!(dumps(dir.path()), kept);

    // Retention: a third and a fourth dump (a second apart, as names are by the second)
    // leave the newest two.
    let mut made = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (ok, out) = run(BACKUP, &env);
        assert!(ok, "{out}");
        made = dumps(dir.path());
    }
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(!made.contains(&kept[0]), "the oldest was pruned: {made:?}");

    // A retention that is not a whole number above 0 is refused before anything runs.
    let mut zero = env.clone();
    for (k, v) in &mut zero {
        if *k == "BACKUP_RETENTION" {
            *v = "0".into();
        }
    }
    let (ok, out) = run(BACKUP, &zero);
    assert!(!ok && out.contains("BACKUP_RETENTION"), "{out}");
    assert_eq!(dumps(dir.path()), made);
}

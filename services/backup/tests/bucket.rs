//! `mercato-backup` against a real S3-compatible server (s3s-fs, which checks every
//! request's signature): what a platform team's bucket would hold after each step.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;

use mercato_backup::testing::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};
use mercato_backup::{Backups, Dump, MIN_PART_SIZE};

/// Bytes that differ from position to position, so a misplaced part shows.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2654435761)
                .wrapping_add(u64::from(seed)) as u8
        })
        .collect()
}

fn write_dump(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn names(dumps: &[Dump]) -> Vec<&str> {
    dumps.iter().map(|d| d.name.as_str()).collect()
}

#[tokio::test]
async fn uploads_keep_the_newest_dumps_and_latest_fetches_the_newest() {
    let server = S3Server::start("backups").await.unwrap();
    let backups = Backups::new(&server.target("demo/order")).unwrap();
    let local = tempfile::tempdir().unwrap();
    assert!(backups.list().await.unwrap().is_empty());

    let runs = [
        "20261201T031700Z.dump",
        "20261202T031700Z.dump",
        "20261203T031700Z.dump",
    ];
    for (i, name) in runs.iter().enumerate() {
        let path = write_dump(local.path(), name, &content(1000 + i, i as u8));
        let stored = backups.upload(&path, MIN_PART_SIZE).await.unwrap();
        assert_eq!(stored.size, 1000 + i as u64);
        backups.prune(2).await.unwrap();
    }
    let kept = backups.list().await.unwrap();
    assert_eq!(names(&kept), runs[1..].to_vec());
    assert_eq!(kept[1].size, 1002);

    // Another database's folder is not this one's: neither listed nor pruned.
    let other = Backups::new(&server.target("demo/auth")).unwrap();
    assert!(other.list().await.unwrap().is_empty());

    let restore = tempfile::tempdir().unwrap();
    let fetched = backups.download("latest", restore.path()).await.unwrap();
    assert_eq!(fetched, restore.path().join(runs[2]));
    assert_eq!(std::fs::read(&fetched).unwrap(), content(1002, 2));
    let named = backups.download(runs[1], restore.path()).await.unwrap();
    assert_eq!(std::fs::read(named).unwrap(), content(1001, 1));
    // Nothing half-written is left beside them.
    let mut files: Vec<String> = std::fs::read_dir(restore.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, runs[1..].to_vec());
}

#[tokio::test]
async fn a_dump_bigger_than_a_part_is_uploaded_in_parts_and_comes_back_whole() {
    let server = S3Server::start("backups").await.unwrap();
    let backups = Backups::new(&server.target("shop/product")).unwrap();
    let local = tempfile::tempdir().unwrap();
    let bytes = content(2 * MIN_PART_SIZE + 12345, 7);
    let path = write_dump(local.path(), "20261204T031700Z.dump", &bytes);

    let stored = backups.upload(&path, MIN_PART_SIZE).await.unwrap();
    assert_eq!(stored.size, bytes.len() as u64);

    let restore = tempfile::tempdir().unwrap();
    let fetched = backups.download("latest", restore.path()).await.unwrap();
    assert!(
        std::fs::read(fetched).unwrap() == bytes,
        "the dump came back different"
    );
}

#[tokio::test]
async fn a_wrong_key_or_a_missing_dump_fails_with_the_reason_and_stores_nothing() {
    let server = S3Server::start("backups").await.unwrap();
    let local = tempfile::tempdir().unwrap();
    let path = write_dump(local.path(), "20261204T031700Z.dump", b"dump");

    let mut wrong = server.target("demo/order");
    wrong.secret_access_key = "not-the-key".to_string();
    let error = Backups::new(&wrong)
        .unwrap()
        .upload(&path, MIN_PART_SIZE)
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(
        message.contains("s3://backups/demo/order/20261204T031700Z.dump"),
        "{message}"
    );

    let backups = Backups::new(&server.target("demo/order")).unwrap();
    assert!(backups.list().await.unwrap().is_empty());
    let restore = tempfile::tempdir().unwrap();
    let none = backups
        .download("latest", restore.path())
        .await
        .unwrap_err();
    assert_eq!(
        none.to_string(),
        "there is no backup in s3://backups/demo/order"
    );
    let missing = backups
        .download("20261101T000000Z.dump", restore.path())
        .await
        .unwrap_err();
    assert!(
        format!("{missing:#}").contains("does not exist"),
        "{missing:#}"
    );
    let bad = backups
        .download("../etc/passwd", restore.path())
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("is not a dump's name"), "{bad}");
    assert!(backups.prune(0).await.is_err());
    assert_eq!(std::fs::read_dir(restore.path()).unwrap().count(), 0);
}

/// The binary as the operator's pods run it: settings from the environment.
fn binary(server: &S3Server, prefix: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mercato-backup"));
    command
        .env("S3_ENDPOINT", server.endpoint.as_str())
        .env("S3_BUCKET", &server.bucket)
        .env("S3_PREFIX", prefix)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("S3_REGION")
        .env_remove("S3_URL_STYLE");
    command
}

async fn run(mut command: tokio::process::Command) -> (bool, String) {
    let out = command.output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_binary_pushes_the_newest_dump_prunes_and_fetches_unless_the_database_exists() {
    let server = S3Server::start("backups").await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    write_dump(scratch.path(), "20261203T031700Z.dump", b"older");
    write_dump(scratch.path(), "20261204T031700Z.dump", b"newest");

    let mut push = binary(&server, "demo/payment");
    push.args(["push", "--from"])
        .arg(scratch.path())
        .env("BACKUP_RETENTION", "1");
    let (ok, out) = run(push).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("s3://backups/demo/payment/20261204T031700Z.dump (6 bytes, stored whole)"),
        "{out}"
    );
    let backups = Backups::new(&server.target("demo/payment")).unwrap();
    assert_eq!(
        names(&backups.list().await.unwrap()),
        ["20261204T031700Z.dump"]
    );

    // A data directory that is already initialised gets nothing.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("PG_VERSION"), "15\n").unwrap();
    let restore = tempfile::tempdir().unwrap();
    let mut fetch = binary(&server, "demo/payment");
    fetch
        .args(["fetch", "--into"])
        .arg(restore.path())
        .arg("--unless-exists")
        .arg(data.path().join("PG_VERSION"))
        .env("RESTORE_FILE", "latest");
    let (ok, out) = run(fetch).await;
    assert!(ok && out.contains("nothing fetched"), "{out}");
    assert_eq!(std::fs::read_dir(restore.path()).unwrap().count(), 0);

    let mut fetch = binary(&server, "demo/payment");
    fetch
        .args(["fetch", "--into"])
        .arg(restore.path())
        .arg("--unless-exists")
        .arg(data.path().join("no-such-file"))
        .env("RESTORE_FILE", "latest");
    let (ok, out) = run(fetch).await;
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read(restore.path().join("20261204T031700Z.dump")).unwrap(),
        b"newest"
    );

    // Without credentials it says which is missing, and touches nothing.
    let mut push = binary(&server, "demo/payment");
    push.args(["push", "--from"])
        .arg(scratch.path())
        .env("BACKUP_RETENTION", "1")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let (ok, out) = run(push).await;
    assert!(
        !ok && out.contains("AWS_SECRET_ACCESS_KEY is not set"),
        "{out}"
    );
}

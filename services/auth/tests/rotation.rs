//! A signing-key rotation as the operator drives it, against the real auth service over
//! HTTP: the mounted Secret files are rewritten the way the kubelet does (a new directory,
//! then one symlink swap) while a client keeps calling with every token issued so far.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use mercato_auth::Config;
use mercato_contract::credentials::{JwtKeyMaterial, generate_jwt_keys};
use mercato_contract::secret_keys;
use mercato_kit::server::ServiceConfig;
use mercato_kit::testing::{TestDb, TestServer, poll};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A Secret volume as the kubelet lays it out: `..data` points at a timestamped directory
/// and each file is a symlink through `..data`, so an update swaps every file at once.
struct SecretMount {
    dir: PathBuf,
    version: AtomicUsize,
}

impl SecretMount {
    fn new(dir: PathBuf, files: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mount = Self {
            dir,
            version: AtomicUsize::new(0),
        };
        mount.write(files);
        mount
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn write(&self, files: &[(&str, &str)]) {
        let n = self.version.fetch_add(1, Ordering::SeqCst);
        let version = format!("..version-{n}");
        let target = self.dir.join(&version);
        std::fs::create_dir(&target).unwrap();
        for (name, content) in files {
            std::fs::write(target.join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        if n > 0 {
            std::fs::remove_dir_all(self.dir.join(format!("..version-{}", n - 1))).unwrap();
        }
    }
}

/// One JWKS holding the public keys of every key pair given, in order.
fn jwks_of(pairs: &[&JwtKeyMaterial]) -> String {
    let keys: Vec<Value> = pairs
        .iter()
        .flat_map(|p| {
            let set: Value = serde_json::from_str(&p.jwks_json).unwrap();
            set["keys"].as_array().unwrap().clone()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn kid_of_pair(pair: &JwtKeyMaterial) -> String {
    let set: Value = serde_json::from_str(&pair.jwks_json).unwrap();
    set["keys"][0]["kid"].as_str().unwrap().to_string()
}

struct App {
    server: TestServer,
    http: reqwest::Client,
    jwks: SecretMount,
    signing: SecretMount,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl App {
    async fn spawn(old: &JwtKeyMaterial) -> Self {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let jwks = SecretMount::new(
            dir.path().join("jwks"),
            &[(secret_keys::JWKS, &old.jwks_json)],
        );
        let signing = SecretMount::new(
            dir.path().join("jwt-signing"),
            &[(secret_keys::JWT_PRIVATE_KEY, &old.private_pem)],
        );
        let config = Config::try_parse_from([
            "mercato-auth".to_string(),
            format!("--database-url={}", db.url),
            format!("--jwks-path={}", jwks.path(secret_keys::JWKS).display()),
            format!(
                "--jwt-private-key-path={}",
                signing.path(secret_keys::JWT_PRIVATE_KEY).display()
            ),
            "--jwks-reload-interval-secs=1".into(),
            // The test logs in repeatedly to see which key signs.
            "--login-attempts-per-username=1000".into(),
            "--login-attempts-per-client=1000".into(),
            "--argon2-memory-kib=64".into(),
            "--argon2-iterations=1".into(),
            "--log-format=pretty".into(),
            "--log-level=warn".into(),
        ])
        .unwrap();
        let server = TestServer::start(config.build().await.unwrap().start()).await;
        let app = Self {
            server,
            http: reqwest::Client::new(),
            jwks,
            signing,
            _dir: dir,
            _db: db,
        };
        let r = app
            .http
            .post(app.server.url("/auth/register"))
            .json(&json!({"username": "rita", "email": "rita@example.com", "password": "correct-horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        app
    }

    async fn login(&self) -> String {
        let r = self
            .http
            .post(self.server.url("/auth/login"))
            .json(&json!({"username": "rita", "password": "correct-horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn me(&self, token: &str) -> StatusCode {
        self.http
            .get(self.server.url("/users/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn published_kids(&self) -> Vec<String> {
        let jwks: Value = self
            .http
            .get(self.server.url("/auth/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut kids: Vec<String> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        kids.sort();
        kids
    }
}

/// Calls `/users/me` with every token in `tokens`, and `/readyz`, round after round until
/// stopped; remembers every answer that was not 200.
struct Client {
    tokens: Arc<Mutex<Vec<String>>>,
    rounds: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(app: &App, first: String) -> Self {
        let tokens = Arc::new(Mutex::new(vec![first]));
        let rounds = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (me, ready) = (app.server.url("/users/me"), app.server.ops_url("/readyz"));
        let http = app.http.clone();
        let task = tokio::spawn({
            let (tokens, rounds, failures, stop) = (
                tokens.clone(),
                rounds.clone(),
                failures.clone(),
                stop.clone(),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let batch = tokens.lock().unwrap().clone();
                    for token in batch {
                        let status = http
                            .get(&me)
                            .bearer_auth(&token)
                            .send()
                            .await
                            .map(|r| r.status());
                        if !matches!(status, Ok(StatusCode::OK)) {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("key {}: {status:?}", kid_of(&token)));
                        }
                    }
                    let status = http.get(&ready).send().await.map(|r| r.status());
                    if !matches!(status, Ok(StatusCode::OK)) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("/readyz: {status:?}"));
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            tokens,
            rounds,
            failures,
            stop,
            task,
        }
    }

    fn add(&self, token: String) {
        self.tokens.lock().unwrap().push(token);
    }

    /// Waits until the client has made `n` more full rounds (with the tokens it has now).
    async fn rounds(&self, n: usize) {
        let target = self.rounds.load(Ordering::SeqCst) + n + 1;
        let done = poll(
            100,
            || async { self.rounds.load(Ordering::SeqCst) },
            |r| *r >= target,
        )
        .await;
        assert!(done >= target, "the client made {done} of {target} rounds");
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.rounds.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test]
async fn tokens_from_before_during_and_after_a_rotation_are_accepted_and_no_request_fails() {
    let old = generate_jwt_keys();
    let new = generate_jwt_keys();
    let (old_kid, new_kid) = (kid_of_pair(&old), kid_of_pair(&new));
    let app = App::spawn(&old).await;

    let before = app.login().await;
    assert_eq!(kid_of(&before), old_kid);
    let client = Client::start(&app, before.clone());
    client.rounds(3).await;

    // Publishing: the operator stores the next key aside and publishes both public keys.
    app.signing.write(&[
        (secret_keys::JWT_PRIVATE_KEY, &old.private_pem),
        (secret_keys::JWT_NEXT_PRIVATE_KEY, &new.private_pem),
    ]);
    app.jwks
        .write(&[(secret_keys::JWKS, &jwks_of(&[&old, &new]))]);
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    let kids = poll(50, || app.published_kids(), |k| *k == both).await;
    assert_eq!(kids, both, "both keys are published");
    let during = app.login().await;
    assert_eq!(
        kid_of(&during),
        old_kid,
        "auth signs with the old key until told"
    );
    client.add(during.clone());
    client.rounds(3).await;

    // Signing: the new key becomes auth's; no restart.
    app.signing
        .write(&[(secret_keys::JWT_PRIVATE_KEY, &new.private_pem)]);
    let mut after = app.login().await;
    for _ in 0..50 {
        if kid_of(&after) == new_kid {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = app.login().await;
    }
    assert_eq!(kid_of(&after), new_kid, "auth switched to the new key");
    client.add(after.clone());
    // Retiring: the old key stays published while tokens it signed live.
    client.rounds(5).await;

    let (rounds, failures) = client.stop().await;
    assert!(rounds >= 11, "the client kept calling ({rounds} rounds)");
    assert_eq!(failures, Vec::<String>::new(), "no request failed");

    // Idle: the old public key is withdrawn; only what it signed is refused.
    app.jwks.write(&[(secret_keys::JWKS, &new.jwks_json)]);
    let status = poll(50, || app.me(&before), |s| *s == StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a retired key verifies nothing"
    );
    assert_eq!(app.me(&during).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.me(&after).await, StatusCode::OK);
    assert_eq!(app.published_kids().await, vec![new_kid.clone()]);
    assert_eq!(kid_of(&app.login().await), new_kid);
}

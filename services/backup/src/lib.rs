//! A Store's backups in an S3-compatible bucket.
//!
//! The backup CronJob dumps a database with `backup.sh` (in the database's own image, which
//! has `pg_dump` and checks each dump with `pg_restore --list`) into a scratch folder;
//! `mercato-backup push` then copies that checked dump to `<prefix>/<name>` in the bucket,
//! confirms the bucket holds all of it, and only then prunes the oldest dumps beyond the
//! retention. A restoring database's init container runs `mercato-backup fetch`, which
//! brings one dump (or the newest) back into a folder for `restore.sh`.
//!
//! Requests are signed with AWS Signature V4 (query-string signatures, from `rusty-s3`),
//! which AWS S3 and the S3-compatible servers (MinIO, Ceph RGW, Garage, R2, …) accept.

#[cfg(feature = "test-server")]
pub mod testing;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// How long each signed request stays valid: long enough for the slowest part upload.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);
/// The default size of a multipart upload's parts (S3 allows 5 MiB to 5 GiB, and at most
/// 10,000 parts: dumps of up to 160 GiB at this size). A dump no bigger goes in one PUT.
pub const DEFAULT_PART_SIZE: usize = 16 * 1024 * 1024;
/// S3's smallest part (but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

/// Whether `name` is a dump's name as `backup.sh` writes them: `YYYYMMDDTHHMMSSZ.dump`,
/// the UTC time of the backup, so that names sort by time.
pub fn is_dump_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 21
        && name.ends_with(".dump")
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

/// Where a database's dumps go: a bucket, and the prefix (a folder) in it.
#[derive(Clone)]
pub struct Target {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio.backups:9000`, …
    pub endpoint: Url,
    pub bucket: String,
    pub region: String,
    /// Path style (`<endpoint>/<bucket>/<key>`), which every S3-compatible server takes,
    /// or virtual-hosted style (`<bucket>.<endpoint host>/<key>`).
    pub virtual_host: bool,
    /// The folder of this database's dumps, e.g. `demo/order` (no leading or trailing `/`).
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Shows where, never the secret key or the session token.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint.as_str())
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("virtual_host", &self.virtual_host)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A dump in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// Its name, without the prefix: `20261204T031700Z.dump`.
    pub name: String,
    pub size: u64,
}

/// The bucket of one database's dumps.
#[derive(Debug)]
pub struct Backups {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    place: String,
}

impl Backups {
    pub fn new(target: &Target) -> anyhow::Result<Self> {
        let style = if target.virtual_host {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let bucket = Bucket::new(
            target.endpoint.clone(),
            style,
            target.bucket.clone(),
            target.region.clone(),
        )
        .with_context(|| {
            format!(
                "endpoint {} and bucket {:?} do not make a bucket URL",
                target.endpoint, target.bucket
            )
        })?;
        let credentials = match &target.session_token {
            Some(token) => {
                Credentials::new_with_token(&target.access_key_id, &target.secret_access_key, token)
            }
            None => Credentials::new(&target.access_key_id, &target.secret_access_key),
        };
        let prefix = target.prefix.trim_matches('/').to_string();
        ensure!(!prefix.is_empty(), "the prefix of the dumps is empty");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up an HTTP client")?;
        Ok(Self {
            place: format!("s3://{}/{prefix}", target.bucket),
            http,
            bucket,
            credentials,
            prefix,
        })
    }

    /// `s3://bucket/prefix`.
    pub fn place(&self) -> &str {
        &self.place
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// `s3://bucket/key`, for messages.
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    /// The dumps in the bucket, oldest first (other objects under the prefix are left out).
    pub async fn list(&self) -> anyhow::Result<Vec<Dump>> {
        let folder = format!("{}/", self.prefix);
        let mut dumps = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(folder.as_str());
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let response = self.http.get(action.sign(SIGNATURE_LIFETIME)).send().await;
            let body = checked(response, "list", &self.place).await?.text().await?;
            let page = ListObjectsV2::parse_response(&body)
                .with_context(|| format!("the listing of {} is not S3's XML", self.place))?;
            dumps.extend(page.contents.into_iter().filter_map(|object| {
                let name = object.key.strip_prefix(&folder)?;
                is_dump_name(name).then(|| Dump {
                    name: name.to_string(),
                    size: object.size.unwrap_or(0),
                })
            }));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        dumps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(dumps)
    }

    /// The size of the dump `name` in the bucket, or `None` if there is none.
    pub async fn size(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let key = self.key(name);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_LIFETIME);
        let response = self.http.head(url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let at = self.location(&key);
        let response = checked(Ok(response), "read", &at).await?;
        // The header itself: a HEAD response's body is empty, whatever the object's size.
        let length = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .with_context(|| format!("{at}: no Content-Length in the answer to HEAD"))?;
        Ok(Some(length))
    }

    /// Uploads the file at `path` as `<prefix>/<its name>` (in one PUT, or in parts of
    /// `part_size` bytes when it is bigger), then checks that the bucket holds all of it.
    pub async fn upload(&self, path: &Path, part_size: usize) -> anyhow::Result<Dump> {
        ensure!(
            part_size >= MIN_PART_SIZE,
            "the part size is {part_size} bytes; S3 takes at least {MIN_PART_SIZE}"
        );
        let name = file_name(path)?;
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().await?.len();
        let key = self.key(&name);
        let at = self.location(&key);
        if size <= part_size as u64 {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body).await?;
            let url = self
                .bucket
                .put_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_LIFETIME);
            checked(self.http.put(url).body(body).send().await, "write", &at).await?;
        } else {
            let parts = size.div_ceil(part_size as u64);
            ensure!(
                parts <= MAX_PARTS,
                "{} is {size} bytes: more than {MAX_PARTS} parts of {part_size} bytes",
                path.display()
            );
            self.upload_in_parts(&mut file, &key, &at, part_size)
                .await?;
        }
        match self.size(&name).await? {
            Some(stored) if stored == size => Ok(Dump { name, size }),
            Some(stored) => bail!("{at} holds {stored} bytes after the upload, not {size}"),
            None => bail!("{at} is not in the bucket after its upload"),
        }
    }

    async fn upload_in_parts(
        &self,
        file: &mut tokio::fs::File,
        key: &str,
        at: &str,
        part_size: usize,
    ) -> anyhow::Result<()> {
        let create = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key)
            .sign(SIGNATURE_LIFETIME);
        let body = checked(
            self.http.post(create).send().await,
            "start an upload to",
            at,
        )
        .await?
        .text()
        .await?;
        let created = CreateMultipartUpload::parse_response(&body)
            .with_context(|| format!("the answer to starting an upload to {at} is not S3's XML"))?;
        let upload_id = created.upload_id().to_string();
        let result = self.send_parts(file, key, at, &upload_id, part_size).await;
        if result.is_err() {
            // Parts are stored (and billed) until the upload is completed or aborted.
            let abort = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), key, &upload_id)
                .sign(SIGNATURE_LIFETIME);
            if let Err(e) = checked(
                self.http.delete(abort).send().await,
                "abort the upload to",
                at,
            )
            .await
            {
                eprintln!("backup: {e:#}");
            }
        }
        result
    }

    async fn send_parts(
        &self,
        file: &mut tokio::fs::File,
        key: &str,
        at: &str,
        upload_id: &str,
        part_size: usize,
    ) -> anyhow::Result<()> {
        let mut etags = Vec::new();
        let mut buffer = vec![0; part_size];
        loop {
            let filled = fill(file, &mut buffer).await?;
            if filled == 0 {
                break;
            }
            let number = u16::try_from(etags.len() + 1).context("too many parts")?;
            let url = self
                .bucket
                .upload_part(Some(&self.credentials), key, number, upload_id)
                .sign(SIGNATURE_LIFETIME);
            let body = buffer[..filled].to_vec();
            let response = checked(self.http.put(url).body(body).send().await, "write", at).await?;
            let etag = response
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .with_context(|| format!("part {number} of {at} came back without an ETag"))?;
            etags.push(etag.to_string());
            if filled < part_size {
                break;
            }
        }
        let complete = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = complete.sign(SIGNATURE_LIFETIME);
        let body = complete.body();
        let response = checked(self.http.post(url).body(body).send().await, "complete", at).await?;
        // S3 may answer 200 and still fail: the error is then in the body.
        let text = response.text().await?;
        if text.contains("<Error>") {
            bail!("cannot complete {at}: {}", s3_error(&text));
        }
        Ok(())
    }

    /// Removes the oldest dumps beyond the newest `retention`; the names removed.
    pub async fn prune(&self, retention: usize) -> anyhow::Result<Vec<String>> {
        ensure!(retention > 0, "a retention of 0 would remove every backup");
        let dumps = self.list().await?;
        let excess = dumps.len().saturating_sub(retention);
        let mut removed = Vec::new();
        for dump in dumps.into_iter().take(excess) {
            let key = self.key(&dump.name);
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNATURE_LIFETIME);
            let at = self.location(&key);
            checked(self.http.delete(url).send().await, "remove", &at).await?;
            removed.push(dump.name);
        }
        Ok(removed)
    }

    /// Downloads the dump `file` (a dump's name, or `latest` for the newest) into folder
    /// `into`; its path there. It is written under a temporary name and renamed once all of
    /// it has arrived, so the folder never holds part of a dump under a dump's name.
    pub async fn download(&self, file: &str, into: &Path) -> anyhow::Result<PathBuf> {
        let name = if file == "latest" {
            match self.list().await?.pop() {
                Some(newest) => newest.name,
                None => bail!("there is no backup in {}", self.place),
            }
        } else {
            ensure!(
                is_dump_name(file),
                "{file:?} is not a dump's name (YYYYMMDDTHHMMSSZ.dump) or `latest`"
            );
            file.to_string()
        };
        let key = self.key(&name);
        let at = self.location(&key);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_LIFETIME);
        let response = self.http.get(url).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            bail!("{at} does not exist");
        }
        let mut response = checked(Ok(response), "read", &at).await?;
        let expected = response.content_length();
        tokio::fs::create_dir_all(into)
            .await
            .with_context(|| format!("cannot create {}", into.display()))?;
        let partial = into.join(format!(".partial-{name}"));
        let path = into.join(&name);
        let mut out = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut received = 0u64;
        let copied: anyhow::Result<()> = async {
            while let Some(chunk) = response.chunk().await? {
                received += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.sync_all().await?;
            if let Some(expected) = expected {
                ensure!(
                    received == expected,
                    "{at}: {received} bytes arrived of {expected}"
                );
            }
            Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.context(format!("cannot download {at}")));
        }
        tokio::fs::rename(&partial, &path).await?;
        Ok(path)
    }
}

/// The newest dump in folder `dir` (as `backup.sh` names them), or an error saying there is
/// none.
pub fn newest_dump(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_dump_name(name))
        .collect();
    names.sort();
    match names.pop() {
        Some(name) => Ok(dir.join(name)),
        None => bail!("{} holds no dump", dir.display()),
    }
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", path.display()))?;
    ensure!(
        is_dump_name(name),
        "{} is not a dump as backup.sh names them (YYYYMMDDTHHMMSSZ.dump)",
        path.display()
    );
    Ok(name.to_string())
}

/// Reads into `buffer` until it is full or the file ends; how much it read.
async fn fill(file: &mut tokio::fs::File, buffer: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = file.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// The response, if it is a success; otherwise an error with S3's code and message.
async fn checked(
    response: reqwest::Result<reqwest::Response>,
    doing: &str,
    at: &str,
) -> anyhow::Result<reqwest::Response> {
    let response = response.with_context(|| format!("cannot {doing} {at}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("cannot {doing} {at}: HTTP {status}: {}", s3_error(&body))
}

/// `Code: Message` of an S3 error document, or the start of whatever the body is.
fn s3_error(body: &str) -> String {
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].to_string())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ if body.trim().is_empty() => "no details".to_string(),
        _ => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_are_backup_times() {
        assert!(is_dump_name("20261204T031700Z.dump"));
        for name in [
            "20261204T031700Z.dump.partial",
            ".partial-20261204T031700Z.dump",
            "2026120T031700Z.dump",
            "20261204-031700Z.dump",
            "20261204T031700.dump",
            "latest",
            "../20261204T031700Z",
        ] {
            assert!(!is_dump_name(name), "{name}");
        }
    }

    #[test]
    fn s3_errors_read_as_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(s3_error(body), "AccessDenied: Access Denied");
        assert_eq!(s3_error(""), "no details");
        assert_eq!(s3_error("bad gateway"), "bad gateway");
    }

    #[test]
    fn debug_hides_the_secret_key() {
        let target = Target {
            endpoint: "https://s3.example.com"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            bucket: "b".into(),
            region: "us-east-1".into(),
            virtual_host: false,
            prefix: "demo/order".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI-very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let shown = format!("{target:?}");
        assert!(shown.contains("AKIAEXAMPLE"), "{shown}");
        assert!(
            !shown.contains("very-secret") && !shown.contains("token-secret"),
            "{shown}"
        );
    }

    #[test]
    fn the_newest_dump_of_a_folder_is_the_latest_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(newest_dump(dir.path()).is_err());
        for name in [
            "20261203T031700Z.dump",
            "20261204T031700Z.dump",
            ".partial-20261205T031700Z.dump",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            newest_dump(dir.path()).unwrap_or_else(|e| panic!("{e}")),
            dir.path().join("20261204T031700Z.dump")
        );
    }
}

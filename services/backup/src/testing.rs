//! An S3-compatible server for tests: `s3s-fs` (a file-backed implementation of the S3 API
//! that checks Signature V4) on a temporary folder, on a free port of 127.0.0.1.

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use url::Url;

use crate::Target;

/// Credentials the test server accepts (and no others).
pub const ACCESS_KEY_ID: &str = "mercato-test";
pub const SECRET_ACCESS_KEY: &str = "mercato-test-secret-key";

/// A running server with one bucket; it stops when dropped.
#[derive(Debug)]
pub struct S3Server {
    pub endpoint: Url,
    pub bucket: String,
    root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// Starts a server with an empty bucket `bucket` on a free port of 127.0.0.1.
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0".parse()?, bucket).await
    }

    /// Starts a server with an empty bucket `bucket` on `address`.
    pub async fn start_at(address: std::net::SocketAddr, bucket: &str) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join(bucket))?;
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| anyhow::anyhow!("cannot serve {}: {e:?}", root.path().display()))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = builder.build();
        let listener = TcpListener::bind(address).await?;
        let endpoint = Url::parse(&format!("http://{}", listener.local_addr()?))?;
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service);
                    let _ = connection.await;
                });
            }
        });
        Ok(Self {
            endpoint,
            bucket: bucket.to_string(),
            root,
            task,
        })
    }

    /// The bucket's folder `prefix`, with the credentials the server accepts.
    pub fn target(&self, prefix: &str) -> Target {
        Target {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: "us-east-1".to_string(),
            virtual_host: false,
            prefix: prefix.to_string(),
            access_key_id: ACCESS_KEY_ID.to_string(),
            secret_access_key: SECRET_ACCESS_KEY.to_string(),
            session_token: None,
        }
    }

    /// The folder the server keeps its buckets in.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

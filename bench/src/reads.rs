//! The load generator's reads: each worker keeps one HTTP/1.1 connection to the server and
//! sends one `GET` after another over it, reading every answer whole, as `wrk` does. The
//! client shares the two cores with the store, so the less it costs, the more of the
//! machine the store gets; a pooled general-purpose client spent about half of it.

use http::header::{CACHE_CONTROL, HOST};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// One server's reads, a connection per worker (opened on first use, again after a close).
pub struct Reads {
    address: String,
    host: HeaderValue,
    connections: Vec<Mutex<Option<SendRequest<Empty<Bytes>>>>>,
}

impl Reads {
    /// Reads from the server at `base` (`http://host:port`) for up to `workers` workers.
    pub fn new(base: &str, workers: usize) -> anyhow::Result<Self> {
        let address = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("{base}: only http:// is read"))?
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            host: HeaderValue::from_str(&address)?,
            address,
            connections: (0..workers).map(|_| Mutex::new(None)).collect(),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("connect {}: {e}", self.address))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(send)
    }

    /// `GET path` on `worker`'s connection (with `Cache-Control: no-cache` if `no_cache`):
    /// done once the whole answer has arrived; an error unless it is 2xx.
    pub async fn get(&self, worker: usize, path: &str, no_cache: bool) -> Result<(), String> {
        let slot = self
            .connections
            .get(worker)
            .ok_or_else(|| format!("worker {worker} has no connection"))?;
        let mut slot = slot.lock().await;
        let mut send = match slot.take() {
            Some(send) if !send.is_closed() => send,
            _ => self.connect().await?,
        };
        send.ready().await.map_err(|e| e.to_string())?;
        let mut request = Request::get(path).header(HOST, self.host.clone());
        if no_cache {
            request = request.header(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        *slot = Some(send);
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
        }
    }
}

//! `http-floor`: the cheapest HTTP/1.1 answer this machine can give, for `make bench`'s
//! floor scenario. A hyper server on two worker threads (as the services run) answers every
//! request at once with the same fixed answer: a JSON body of `--body-bytes` and the
//! headers of a cached catalogue read. No routing, no middleware, no cache lookup: what is
//! left is the load generator, the kernel's loopback TCP and hyper, which every HTTP read of
//! the store also pays. Prints `listening on <address>`, then serves until stdin closes.

use std::convert::Infallible;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut body_bytes = 300usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--body-bytes" => body_bytes = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other:?} (only --body-bytes N)"),
        }
    }
    let mut body = b"{\"padding\":\"".to_vec();
    body.resize(body_bytes.saturating_sub(2).max(body.len()), b'x');
    body.extend_from_slice(b"\"}");
    let body = Bytes::from(body);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(body))
}

async fn serve(body: Bytes) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    let accept = async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let mut response = Response::new(Full::new(body.clone()));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=1"));
                    headers.insert(ETAG, HeaderValue::from_static("\"0123456789abcdef\""));
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    };
    // Until the parent closes stdin (or goes).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while std::io::Read::read(&mut stdin, &mut sink).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
    accept.await;
    Ok(())
}

//! Forwarding one request to its service, streaming the body both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mercato_contract::{CLIENT_ADDRESS_HEADER, Component, RELAYED_CLIENT_HEADER};
use mercato_kit::ApiError;
use mercato_kit::metrics::Metrics;
use mercato_kit::telemetry::REQUEST_ID_HEADER;

use crate::Gateway;
use crate::cache::PublicCache;
use crate::routes::{requires_token, upstream_for};

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Says who the client is to the service: the settled address in the client-address
/// header, signed (any value the client sent is dropped, whatever happens), and
/// `X-Forwarded-For` with the peer appended, keeping earlier hops only from a trusted peer.
fn set_client_headers(headers: &mut HeaderMap, g: &Gateway, peer: SocketAddr, client: IpAddr) {
    headers.remove(CLIENT_ADDRESS_HEADER);
    headers.remove(RELAYED_CLIENT_HEADER);
    if let Some(key) = &g.edge_key
        && let Ok(v) = HeaderValue::from_str(&key.sign(client))
    {
        headers.insert(CLIENT_ADDRESS_HEADER, v);
    }
    let prior: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if prior.is_empty() || !g.trusted_proxies.contains(&peer.ip()) {
        peer.ip().to_string()
    } else {
        format!("{}, {}", prior.join(", "), peer.ip())
    };
    headers.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", v);
    }
}

/// Who the client is: the shopper a fresh storefront relay vouches for (so the API calls the
/// storefront makes for a shopper count against that shopper, not against the storefront),
/// else the walk through trusted proxies.
fn client_address(g: &Gateway, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    if let Some(key) = &g.edge_key
        && let Some(relayed) = headers
            .get(RELAYED_CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| key.verify_relay(v, time::OffsetDateTime::now_utc().unix_timestamp()))
    {
        return relayed;
    }
    g.trusted_proxies.client(headers, peer)
}

/// `https` when a trusted proxy in front says the client used it (the storefront then marks
/// its cookies `Secure`), else `http`: this gateway itself speaks plain HTTP.
fn forwarded_proto(g: &Gateway, headers: &HeaderMap, peer: IpAddr) -> HeaderValue {
    let said_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    if said_https && g.trusted_proxies.contains(&peer) {
        HeaderValue::from_static("https")
    } else {
        HeaderValue::from_static("http")
    }
}

/// Middleware, outside the standard layers: a public catalogue read with a fresh copy in
/// the cache is answered here, after the rate limit, without the request id span, the
/// deadline and the body read those layers would spend on it; it is still counted, timed
/// and logged like every request, and carries an `x-request-id`. Anything else goes on.
pub async fn cached_read(
    State((g, metrics)): State<(Gateway, Arc<Metrics>)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match cached_answer(&g, peer, &req) {
        Some((started, mut response)) => {
            let id = mercato_kit::telemetry::answer_request_id(req.headers());
            response.headers_mut().insert(REQUEST_ID_HEADER, id);
            // The route template the layers would count it under: the one that matched.
            let route = if req.uri().path() == "/products" {
                "/products"
            } else {
                "/products/{*rest}"
            };
            metrics.record(req.method(), route, response.status(), started.elapsed());
            response
        }
        None => next.run(req).await,
    }
}

fn cached_answer(g: &Gateway, peer: SocketAddr, req: &Request) -> Option<(Instant, Response)> {
    let cache = g.cache.as_deref()?;
    let path = req.uri().path();
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if req.method() != Method::GET
        || has_body
        || !(path == "/products" || path.starts_with("/products/"))
        || upstream_for(path) != Some(Component::Product)
        || requires_token(req.method(), path)
    {
        return None;
    }
    let started = Instant::now();
    let path_and_query = req.uri().path_and_query().map_or(path, |p| p.as_str());
    // The copy first: a read the cache cannot answer takes its token from the limit on
    // the standard path only. Over the limit, that path answers the 429 (a refusal takes
    // no token).
    let fresh = cache.fresh(path_and_query, req.headers())?;
    let client = client_address(g, req.headers(), peer.ip());
    g.limiter.check(&client.to_string()).ok()?;
    Some((started, cache.answer(&fresh, req.headers())))
}

pub async fn forward(
    State(g): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match forward_inner(&g, peer, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn forward_inner(
    g: &Gateway,
    peer: SocketAddr,
    mut req: Request,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let component = upstream_for(&path)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "Not found"))?;
    let client = client_address(g, req.headers(), peer.ip());
    if let Err(wait) = g.limiter.check(&client.to_string()) {
        return Err(ApiError::too_many_requests(
            wait.as_secs().saturating_add(1),
        ));
    }
    if requires_token(req.method(), &path) {
        let token = mercato_kit::auth::bearer_token(req.headers())
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        g.verifier.verify(token).map_err(ApiError::from)?;
    }

    // A fresh copy of a public read answers here; a write drops the copies once its service
    // has answered.
    let cache = g.cache.as_deref();
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let ticket = match cache.and_then(|c| c.lookup(req.method(), path_and_query, req.headers())) {
        Some(Ok(hit)) => return Ok(hit),
        Some(Err(ticket)) => Some(ticket),
        None => None,
    };
    let asked = ticket.as_ref().map(|_| {
        let mut asked = HeaderMap::new();
        for v in req.headers().get_all(header::IF_NONE_MATCH) {
            asked.append(header::IF_NONE_MATCH, v.clone());
        }
        asked
    });
    let _writing = cache
        .filter(|_| changes_state(req.method(), component))
        .map(PublicCache::writing);

    let base = g
        .upstreams
        .base(component)
        .ok_or_else(|| ApiError::internal("no upstream"))?;
    let uri: Uri = format!("{base}{path_and_query}")
        .parse()
        .map_err(|e| ApiError::internal(format!("upstream uri: {e}")))?;
    let original_host = req.headers().get(header::HOST).cloned();
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    set_client_headers(headers, g, peer, client);
    let proto = forwarded_proto(g, headers, peer.ip());
    headers.insert("x-forwarded-proto", proto);
    mercato_kit::telemetry::inject_trace(headers);
    if let Some(host) = original_host {
        headers.insert("x-forwarded-host", host);
    }

    let name = component.display_name();
    let answer = tokio::time::timeout(g.timeout, g.client.request(req)).await;
    let response = match answer {
        Err(_) => {
            tracing::warn!(upstream = name, "upstream timed out");
            return Err(ApiError::timeout(name));
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = name, error = %e, "upstream unreachable");
            return Err(ApiError::unavailable(name));
        }
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let response = Response::from_parts(parts, Body::new(body));
    Ok(match (cache, ticket, asked) {
        (Some(cache), Some(ticket), Some(asked)) => cache.keep(ticket, response, &asked).await,
        _ => response,
    })
}

/// Whether a request may change what a public read answers: any write to the catalogue,
/// an order (it takes stock, a cancellation returns it) or a payment (it settles an order).
fn changes_state(method: &Method, component: Component) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && matches!(
            component,
            Component::Product | Component::Order | Component::Payment
        )
}

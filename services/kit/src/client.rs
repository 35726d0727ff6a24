//! Calls between services: service tokens from the client-credentials grant (cached until
//! shortly before expiry), per-call timeouts, bounded retries for idempotent requests,
//! a circuit breaker, and request-id propagation. Failures become problem+json errors
//! whose title names the dependency ("Product service unavailable").

use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use http::StatusCode;
use mercato_contract::{Component, env};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Problem};
use crate::secret::Secret;
use crate::telemetry;

/// Settings for calls to other services.
#[derive(Debug, Clone, Args)]
pub struct UpstreamConfig {
    /// Timeout of one call to another service, in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 3000)]
    pub upstream_timeout_ms: u64,
    /// Extra attempts for idempotent calls that fail to connect or time out.
    #[arg(long, env = "UPSTREAM_RETRIES", default_value_t = 2)]
    pub upstream_retries: u32,
    /// Consecutive failures that open a dependency's circuit breaker.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before letting one through.
    #[arg(long, env = "BREAKER_OPEN_SECS", default_value_t = 10)]
    pub breaker_open_secs: u64,
}

/// This service's OAuth2 client, for service tokens.
#[derive(Debug, Clone, Args)]
pub struct ServiceClientConfig {
    /// Base URL of the auth service.
    #[arg(long, env = env::AUTH_URL)]
    pub auth_url: String,
    /// This service's client id.
    #[arg(long, env = env::CLIENT_ID)]
    pub client_id: String,
    /// This service's client secret.
    #[arg(long, env = env::CLIENT_SECRET, hide_env_values = true)]
    pub client_secret: Secret<String>,
}

/// How a call to another service failed.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// Could not connect, breaker open, or the dependency answered 5xx.
    Unavailable,
    /// No answer within the timeout.
    Timeout,
    /// The dependency answered with a client error; its problem document is kept.
    Rejected(StatusCode, Option<Problem>),
}

/// A small circuit breaker: after `threshold` consecutive failures the circuit opens and
/// calls fail at once for `open_for`; then one trial call is let through (half-open).
/// Hand-written because the state machine is a dozen lines and the crates offering it
/// are either unmaintained or bring a framework with them.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now.
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match s.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: let this call through; a failure re-opens at once.
                s.open_until = None;
                s.failures = self.threshold.saturating_sub(1);
                true
            }
            None => true,
        }
    }

    pub fn success(&self) {
        let mut s = self.lock();
        s.failures = 0;
        s.open_until = None;
    }

    pub fn failure(&self) {
        let mut s = self.lock();
        s.failures += 1;
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.open_for);
        }
    }

    pub fn is_open(&self) -> bool {
        self.lock().open_until.is_some_and(|u| Instant::now() < u)
    }
}

/// A dependency: base URL, a display name for errors, timeouts, retries and a breaker.
#[derive(Debug)]
pub struct Upstream {
    /// Shown to clients, e.g. "Product service".
    pub name: &'static str,
    base_url: String,
    http: reqwest::Client,
    timeout: Duration,
    retries: u32,
    breaker: Breaker,
}

impl Upstream {
    pub fn new(name: &'static str, base_url: &str, config: &UpstreamConfig) -> Self {
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(config.upstream_timeout_ms.min(2000)))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            timeout: Duration::from_millis(config.upstream_timeout_ms),
            retries: config.upstream_retries,
            breaker: Breaker::new(
                config.breaker_failures,
                Duration::from_secs(config.breaker_open_secs),
            ),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Maps a failure to the answer our own client gets.
    pub fn error(&self, e: &UpstreamError) -> ApiError {
        match e {
            UpstreamError::Unavailable => ApiError::unavailable(self.name),
            UpstreamError::Timeout => ApiError::timeout(self.name),
            UpstreamError::Rejected(status, problem) => {
                let title = problem.as_ref().map_or_else(
                    || format!("{} rejected the request", self.name),
                    |p| p.title.clone(),
                );
                ApiError::new(*status, "upstream_rejected", title)
            }
        }
    }

    /// Sends a request built by `build` (called again for each retry), returning the
    /// decoded JSON of a 2xx answer. `idempotent` calls are retried on connect errors,
    /// timeouts and 5xx, with a short backoff.
    pub async fn call<T: DeserializeOwned>(
        &self,
        idempotent: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let attempts = if idempotent { self.retries + 1 } else { 1 };
        let mut last = UpstreamError::Unavailable;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt))).await;
            }
            if !self.breaker.allow() {
                return Err(UpstreamError::Unavailable);
            }
            let request = telemetry::propagate(build(&self.http)).timeout(self.timeout);
            match request.send().await {
                Ok(resp) if resp.status().is_success() => {
                    self.breaker.success();
                    return resp.json::<T>().await.map_err(|e| {
                        tracing::warn!(upstream = self.name, error = %e, "undecodable answer");
                        UpstreamError::Unavailable
                    });
                }
                Ok(resp) if resp.status().is_server_error() => {
                    self.breaker.failure();
                    tracing::warn!(upstream = self.name, status = %resp.status(), "upstream error");
                    last = if resp.status() == StatusCode::GATEWAY_TIMEOUT {
                        UpstreamError::Timeout
                    } else {
                        UpstreamError::Unavailable
                    };
                }
                Ok(resp) => {
                    // A client error is an answer, not a fault of the dependency.
                    self.breaker.success();
                    let status = resp.status();
                    let problem = resp.json::<Problem>().await.ok();
                    return Err(UpstreamError::Rejected(status, problem));
                }
                Err(e) => {
                    self.breaker.failure();
                    tracing::warn!(upstream = self.name, error = %e, "upstream call failed");
                    last = if e.is_timeout() {
                        UpstreamError::Timeout
                    } else {
                        UpstreamError::Unavailable
                    };
                }
            }
        }
        Err(last)
    }

    /// `POST` a JSON body with a bearer token.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        body: &B,
        idempotent: bool,
    ) -> Result<T, UpstreamError> {
        let url = self.url(path);
        self.call(idempotent, |http| {
            http.post(&url).bearer_auth(token).json(body)
        })
        .await
    }

    /// `GET` JSON with a bearer token (always idempotent).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<T, UpstreamError> {
        let url = self.url(path);
        self.call(true, |http| http.get(&url).bearer_auth(token))
            .await
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// Service tokens from the auth service, cached until shortly before they expire.
#[derive(Debug)]
pub struct TokenSource {
    auth: Upstream,
    client_id: String,
    client_secret: Secret<String>,
    cached: tokio::sync::Mutex<Option<(Secret<String>, Instant)>>,
}

impl TokenSource {
    pub fn new(config: &ServiceClientConfig, upstream: &UpstreamConfig) -> Self {
        Self {
            auth: Upstream::new(Component::Auth.display_name(), &config.auth_url, upstream),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A valid token: the cached one, or a new one. Concurrent callers share one fetch.
    pub async fn token(&self) -> Result<String, ApiError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.expose().clone());
        }
        let url = self.auth.url("/auth/token");
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose().as_str()),
        ];
        let answer: TokenAnswer = self
            .auth
            .call(true, |http| http.post(&url).form(&form))
            .await
            .map_err(|e| {
                if let UpstreamError::Rejected(status, _) = &e {
                    tracing::error!(%status, client = %self.client_id, "auth refused this service's client credentials");
                    return ApiError::unavailable(self.auth.name);
                }
                self.auth.error(&e)
            })?;
        // Refresh a minute early (or at half-life for short tokens).
        let margin = Duration::from_secs((answer.expires_in / 2).min(60));
        let refresh_at = Instant::now() + Duration::from_secs(answer.expires_in) - margin;
        *cached = Some((Secret::new(answer.access_token.clone()), refresh_at));
        Ok(answer.access_token)
    }

    /// Forgets the cached token (after a dependency answered 401 to it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// Another service called with this service's token: a 401 (say, after a key rotation)
/// gets one retry with a fresh token, and the dependency's own client errors ("Product
/// not found", "Not enough stock", with the offending field) are passed through.
#[derive(Debug)]
pub struct Dependency {
    pub upstream: Upstream,
    tokens: std::sync::Arc<TokenSource>,
}

impl Dependency {
    pub fn new(
        component: Component,
        base_url: &str,
        config: &UpstreamConfig,
        tokens: std::sync::Arc<TokenSource>,
    ) -> Self {
        Self {
            upstream: Upstream::new(component.display_name(), base_url, config),
            tokens,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        idempotent: bool,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let mut retried = false;
        loop {
            let token = self.tokens.token().await?;
            match self
                .upstream
                .call(idempotent, |http| build(http, &token))
                .await
            {
                Err(UpstreamError::Rejected(StatusCode::UNAUTHORIZED, _)) if !retried => {
                    self.tokens.invalidate().await;
                    retried = true;
                }
                Err(UpstreamError::Rejected(status, Some(problem))) => {
                    let mut e = ApiError::new(status, "upstream_rejected", problem.title);
                    e.code = problem.code.into();
                    e.detail = problem.detail;
                    e.errors = problem.errors;
                    return Err(e);
                }
                Err(e) => return Err(self.upstream.error(&e)),
                Ok(answer) => return Ok(answer),
            }
        }
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotent: bool,
    ) -> Result<T, ApiError> {
        let url = self.upstream.url(path);
        self.send(idempotent, |http, token| {
            http.post(&url).bearer_auth(token).json(body)
        })
        .await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = self.upstream.url(path);
        self.send(true, |http, token| http.get(&url).bearer_auth(token))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn service_client_settings_and_token_cache_never_show_secrets() {
        let config = ServiceClientConfig {
            auth_url: "http://auth:8080".into(),
            client_id: "order".into(),
            client_secret: Secret::new("client-secret-value".into()),
        };
        let upstream = UpstreamConfig {
            upstream_timeout_ms: 10,
            upstream_retries: 0,
            breaker_failures: 1,
            breaker_open_secs: 1,
        };
        let tokens = TokenSource::new(&config, &upstream);
        *tokens.cached.lock().await =
            Some((Secret::new("cached-token-value".into()), Instant::now()));
        let shown = format!("{config:?} {tokens:?}");
        assert!(shown.contains("order"), "{shown}");
        assert!(!shown.contains("client-secret-value"), "{shown}");
        assert!(!shown.contains("cached-token-value"), "{shown}");
    }

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_after_the_wait() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert!(!b.is_open());
        b.failure();
        assert!(b.is_open());
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one trial call after the wait");
        b.failure();
        assert!(!b.allow(), "a failed trial re-opens at once");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert!(b.allow() && !b.is_open());
    }
}

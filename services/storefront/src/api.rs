//! The store's public API, as the gateway serves it to any client. Calls carry the
//! shopper's access token; a token that has expired is refreshed once with the session's
//! refresh token, and when that fails too the session has ended.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::visit::{Session, Visit};

/// The API's problem+json, as kit defines it for every service.
pub use mercato_kit::error::{FieldError, Problem};

/// What a page says of a problem.
pub trait Explain {
    /// What to tell the shopper: the title, and the detail if any.
    fn message(&self) -> String;
    /// The message for `field`, if the API named it.
    fn field(&self, field: &str) -> Option<&str>;
}

impl Explain for Problem {
    fn message(&self) -> String {
        match &self.detail {
            Some(d) => format!("{}: {d}", self.title),
            None => self.title.clone(),
        }
    }

    fn field(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

/// A problem the storefront itself states about an answer (`code`, `title`).
fn problem(status: u16, code: &str, title: &str) -> Problem {
    Problem {
        type_: "about:blank".into(),
        title: title.into(),
        status,
        detail: None,
        code: code.into(),
        errors: Vec::new(),
        request_id: None,
    }
}

/// Why a call did not give what was asked.
#[derive(Debug)]
pub enum Failure {
    /// No one is signed in.
    SignedOut,
    /// The session was ended (logout elsewhere, expiry, disabled account).
    SessionEnded,
    /// A part of the store is down or slow (the gateway's 503/504, or the gateway itself).
    Unavailable(String),
    /// The API refused: its problem+json.
    Refused(Problem),
}

impl Failure {
    pub fn status(&self) -> u16 {
        match self {
            Failure::SignedOut | Failure::SessionEnded => 401,
            Failure::Unavailable(_) => 503,
            Failure::Refused(p) => p.status,
        }
    }

    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Failure::Refused(p) => Some(p),
            _ => None,
        }
    }
}

/// A successful answer: its body and `ETag`.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub etag: Option<String>,
}

/// One call.
#[derive(Debug)]
pub struct Call<'a> {
    method: Method,
    path: String,
    body: Option<&'a Value>,
    idempotency_key: Option<&'a str>,
    if_match: Option<&'a str>,
    authenticated: bool,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            idempotency_key: None,
            if_match: None,
            authenticated: false,
        }
    }

    pub fn json(mut self, body: &'a Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn idempotency_key(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    pub fn if_match(mut self, etag: &'a str) -> Self {
        self.if_match = Some(etag);
        self
    }

    /// As the signed-in shopper (refreshing the token once if it has expired).
    pub fn as_shopper(mut self) -> Self {
        self.authenticated = true;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        visit: &mut Visit,
        call: Call<'_>,
    ) -> Result<Answer<T>, Failure> {
        let token = if call.authenticated {
            match &visit.session {
                Some(s) => Some(s.access_token.clone()),
                None => return Err(Failure::SignedOut),
            }
        } else {
            None
        };
        let first = self.send(visit, &call, token.as_deref()).await?;
        let response = if first.status() == StatusCode::UNAUTHORIZED && call.authenticated {
            let Some(session) = self.refresh(visit).await? else {
                visit.end_session();
                return Err(Failure::SessionEnded);
            };
            let retried = self.send(visit, &call, Some(&session.access_token)).await?;
            visit.set_session(session);
            if retried.status() == StatusCode::UNAUTHORIZED {
                visit.end_session();
                return Err(Failure::SessionEnded);
            }
            retried
        } else {
            first
        };
        read(response).await
    }

    async fn send(
        &self,
        visit: &Visit,
        call: &Call<'_>,
        token: Option<&str>,
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self
            .http
            .request(call.method.clone(), format!("{}{}", self.base, call.path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(key) = call.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(etag) = call.if_match {
            request = request.header("if-match", etag);
        }
        // Vouches for the shopper: the gateway counts these calls against the shopper (rate
        // limits, login lock-outs), not against the storefront.
        if let Some(relay) = &visit.relay {
            request = request.header(mercato_contract::RELAYED_CLIENT_HEADER, relay.clone());
        }
        if let Some(id) = &visit.request_id {
            request = request.header("x-request-id", id.clone());
        }
        request.send().await.map_err(|e| {
            tracing::warn!(error = %e, path = %call.path, "the gateway did not answer");
            Failure::Unavailable("The store".into())
        })
    }

    /// New tokens for the session, or `None` if it has ended.
    async fn refresh(&self, visit: &Visit) -> Result<Option<Session>, Failure> {
        let Some(session) = visit.session.clone() else {
            return Ok(None);
        };
        let body = serde_json::json!({ "refresh_token": session.refresh_token });
        let response = self
            .send(
                visit,
                &Call::new(Method::POST, "/auth/refresh").json(&body),
                None,
            )
            .await?;
        match read::<Tokens>(response).await {
            Ok(t) => Ok(Some(Session {
                access_token: t.body.access_token,
                refresh_token: t.body.refresh_token,
                ..session
            })),
            Err(Failure::Refused(p)) if p.status < 500 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The token pair auth answers with on login and refresh.
#[derive(Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

async fn read<T: DeserializeOwned>(response: reqwest::Response) -> Result<Answer<T>, Failure> {
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response
        .bytes()
        .await
        .map_err(|_| Failure::Unavailable("The store".into()))?;
    if status.is_success() {
        // 204 has no body: read it as JSON null.
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        return serde_json::from_slice(text)
            .map(|body| Answer { body, etag })
            .map_err(|e| {
                tracing::error!(error = %e, "the API answered with an unexpected body");
                Failure::Refused(problem(
                    502,
                    "bad_answer",
                    "The store gave an answer this page does not understand",
                ))
            });
    }
    let mut problem: Problem = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        problem(
            status.as_u16(),
            "",
            status.canonical_reason().unwrap_or("Error"),
        )
    });
    problem.status = status.as_u16();
    if matches!(status.as_u16(), 502..=504) {
        // The gateway names the part that is down: "Product service unavailable".
        let part = problem
            .title
            .split(" unavailable")
            .next()
            .and_then(|t| t.split(" timed out").next())
            .filter(|t| !t.is_empty() && t.len() < 40)
            .unwrap_or("The store")
            .to_string();
        return Err(Failure::Unavailable(part));
    }
    Err(Failure::Refused(problem))
}

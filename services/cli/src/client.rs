//! Requests to the gateway with the session's token, their failures, and how answers are
//! shown (a table for people, the JSON itself with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::session::Session;

/// How a command failed, mapped to the exit code.
pub enum Failure {
    Refused(Value, u16),
    Unreachable(String),
    Usage(String),
}

impl Failure {
    /// Says what went wrong on stderr (with `--json`, the problem document on stdout too)
    /// and gives the exit code: 1 refused, 2 bad usage, 3 unreachable.
    pub fn report(self, json: bool) -> ExitCode {
        match self {
            Failure::Refused(problem, status) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&problem).unwrap_or_default()
                    );
                }
                let title = problem["title"].as_str().unwrap_or("request refused");
                eprint!("error: {title} ({status})");
                if let Some(detail) = problem["detail"].as_str() {
                    eprint!(": {detail}");
                }
                eprintln!();
                for e in problem["errors"].as_array().into_iter().flatten() {
                    eprintln!(
                        "  {}: {}",
                        e["field"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    );
                }
                ExitCode::from(1)
            }
            Failure::Usage(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
            Failure::Unreachable(message) => {
                eprintln!("error: {message}");
                ExitCode::from(3)
            }
        }
    }
}

/// The gateway, the session, and how to show answers.
pub struct Client {
    pub http: reqwest::Client,
    pub gateway: String,
    pub session: Session,
    /// Where the session is kept, for login and logout.
    pub session_path: PathBuf,
    pub json: bool,
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Result<Value, Failure> {
        self.call_with(method, path, body, auth, None).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        auth: bool,
        idempotency_key: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut req = self.http.request(
            method,
            format!("{}{path}", self.gateway.trim_end_matches('/')),
        );
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if auth {
            let token = self.session.access_token().ok_or_else(|| {
                Failure::Usage("not logged in: run `mercato login <username>`".into())
            })?;
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req
            .send()
            .await
            .map_err(|e| Failure::Unreachable(format!("cannot reach {}: {e}", self.gateway)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(Failure::Refused(value, status.as_u16()))
        }
    }

    pub fn show(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            human(value);
        }
    }
}

//! `register`, `login`, `logout`: the account and the session kept between commands.

use reqwest::Method;
use serde_json::json;

use crate::client::{Client, Failure};
use crate::session::Session;

pub async fn register(
    client: &Client,
    username: &str,
    email: &str,
    password: &str,
) -> Result<(), Failure> {
    let user = client
        .call(
            Method::POST,
            "/auth/register",
            Some(json!({"username": username, "email": email, "password": password})),
            false,
        )
        .await?;
    client.show(&user, |u| {
        println!(
            "registered {} ({})",
            u["username"].as_str().unwrap_or(""),
            u["id"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

pub async fn login(client: &Client, username: &str, password: &str) -> Result<(), Failure> {
    let tokens = client
        .call(
            Method::POST,
            "/auth/login",
            Some(json!({"username": username, "password": password})),
            false,
        )
        .await?;
    let path = &client.session_path;
    Session::from_tokens(&tokens, &client.gateway)
        .save(path)
        .map_err(|e| {
            Failure::Usage(format!(
                "cannot save the session to {}: {e}",
                path.display()
            ))
        })?;
    client.show(&json!({"logged_in": username}), |_| {
        println!("logged in as {username}")
    });
    Ok(())
}

pub async fn logout(client: &Client) -> Result<(), Failure> {
    if let Some(refresh) = client.session.refresh_token() {
        client
            .call(
                Method::POST,
                "/auth/logout",
                Some(json!({"refresh_token": refresh})),
                true,
            )
            .await?;
    }
    let _ = std::fs::remove_file(&client.session_path);
    client.show(&json!({"logged_out": true}), |_| println!("logged out"));
    Ok(())
}

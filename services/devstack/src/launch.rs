//! Starts one service in this process from its environment (as flags), exactly as its
//! binary would from the same environment.

use mercato_contract::Component;
use mercato_kit::server::{Spawned, spawn};
use tokio::net::TcpListener;

/// Builds the component from `args` (the binary name first) and serves it on `listener`.
pub async fn launch(
    component: Component,
    args: Vec<String>,
    listener: TcpListener,
) -> anyhow::Result<Spawned> {
    match component {
        Component::Auth => spawn::<mercato_auth::Config>(args, listener).await,
        Component::Product => spawn::<mercato_product::Config>(args, listener).await,
        Component::Order => spawn::<mercato_order::Config>(args, listener).await,
        Component::Payment => spawn::<mercato_payment::Config>(args, listener).await,
        Component::Gateway => spawn::<mercato_gateway::Config>(args, listener).await,
    }
}

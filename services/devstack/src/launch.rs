//! Starts one service in this process from its environment (as flags), exactly as its
//! binary would from the same environment.

use mercato_contract::Component;
use mercato_kit::server::{Listeners, Spawned, spawn};

/// Builds the component from `args` (the binary name first) and serves it on `listeners`.
pub async fn launch(
    component: Component,
    args: Vec<String>,
    listeners: Listeners,
) -> anyhow::Result<Spawned> {
    match component {
        Component::Auth => spawn::<mercato_auth::Config>(args, listeners).await,
        Component::Product => spawn::<mercato_product::Config>(args, listeners).await,
        Component::Order => spawn::<mercato_order::Config>(args, listeners).await,
        Component::Payment => spawn::<mercato_payment::Config>(args, listeners).await,
        Component::Gateway => spawn::<mercato_gateway::Config>(args, listeners).await,
        Component::Storefront => spawn::<mercato_storefront::Config>(args, listeners).await,
    }
}

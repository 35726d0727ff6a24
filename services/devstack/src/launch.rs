//! Starts one service in this process from its environment (as flags), exactly as its
//! binary would from the same environment.

use clap::Parser;
use mercato_contract::Component;
use mercato_kit::server::Spawned;
use tokio::net::TcpListener;

/// Builds the component from `args` (the binary name first) and serves it on `listener`.
pub async fn launch(
    component: Component,
    args: Vec<String>,
    listener: TcpListener,
) -> anyhow::Result<Spawned> {
    macro_rules! start {
        ($krate:ident) => {{
            let config = $krate::Config::try_parse_from(args)
                .map_err(|e| anyhow::anyhow!("{} configuration: {e}", component.name()))?;
            let app = $krate::App::build(&config).await?;
            app.spawn_background(&config);
            app.router
        }};
    }
    let router = match component {
        Component::Auth => start!(mercato_auth),
        Component::Product => start!(mercato_product),
        Component::Order => start!(mercato_order),
        Component::Payment => start!(mercato_payment),
        Component::Gateway => start!(mercato_gateway),
    };
    Ok(Spawned::start_on(listener, router))
}

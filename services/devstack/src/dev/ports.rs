//! The ports of a store: the gateway on the base port, the services and the storefront on
//! the next five, and
//! each one's operational port ten above its own (or all random for tests), bound up front
//! so a port in use is named before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mercato_contract::Component;
use mercato_kit::server::Listeners;
use tokio::net::TcpListener;

use super::ORDER;

fn port_offset(c: Component) -> u16 {
    match c {
        Component::Gateway => 0,
        Component::Auth => 1,
        Component::Product => 2,
        Component::Order => 3,
        Component::Payment => 4,
        Component::Storefront => 5,
    }
}

/// How far above its public port a component's operational port is.
pub(super) const OPS_OFFSET: u16 = 10;

pub(super) async fn bind_all(port_base: u16) -> anyhow::Result<BTreeMap<Component, Listeners>> {
    let mut listeners = BTreeMap::new();
    for c in ORDER {
        let port = |extra: u16| {
            if port_base == 0 {
                0
            } else {
                port_base + port_offset(c) + extra
            }
        };
        let pair = Listeners {
            public: bind(c, port(0), "").await?,
            ops: bind(c, port(OPS_OFFSET), " operational").await?,
        };
        listeners.insert(c, pair);
    }
    Ok(listeners)
}

async fn bind(c: Component, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "port {port} ({c}{what}) is not available: {e}. Stop whatever uses it, or pick other ports: PORT_BASE=9080 make dev"
        )
    })
}

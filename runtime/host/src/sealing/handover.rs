//! How a joining host gets the cluster key: from a member, over the peer port's mutual TLS,
//! which admits only current members' certificates from the cluster's CA. It never crosses the
//! network otherwise, and never reaches a host's disk but wrapped under that host's own key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use base64::Engine as _;
use doppel_replication::{HostRoute, Member};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::root::ClusterKey;
use super::store::SealedStore;

/// The peer route on which a member hands out the cluster key.
const CLUSTER_KEY: HostRoute = HostRoute("/cluster-key");

/// How long a joining host keeps asking before it gives up.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Handed {
    key: String,
}

/// The route, answered by a member that has the key (503 until it has).
pub fn peer_routes(sealed: Arc<SealedStore>) -> axum::Router {
    axum::Router::new().route(
        CLUSTER_KEY.0,
        axum::routing::get(move || {
            let sealed = sealed.clone();
            async move {
                match sealed.cluster_key() {
                    Some(key) => Ok(Json(Handed {
                        key: base64::engine::general_purpose::STANDARD.encode(key.expose()),
                    })),
                    None => Err((
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this host has no cluster key yet",
                    )),
                }
            }
        }),
    )
}

/// Asks the other members for the cluster key until one hands it over.
pub async fn fetch(member: &Member) -> anyhow::Result<ClusterKey> {
    let started = Instant::now();
    let mut last = String::from("no other member is known");
    while started.elapsed() < PATIENCE {
        for (id, addr) in member.store().members() {
            if id == member.id() {
                continue;
            }
            match member
                .peers()
                .call::<(), Handed>(&addr, CLUSTER_KEY, None, Duration::from_secs(5))
                .await
            {
                Ok(handed) => {
                    let raw = Zeroizing::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(&handed.key)
                            .unwrap_or_default(),
                    );
                    return ClusterKey::from_bytes(&raw).ok_or_else(|| {
                        anyhow::anyhow!("member {id} handed over something that is not a key")
                    });
                }
                Err(e) => last = format!("member {id} at {addr}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "no member handed over the cluster key within {} s ({last}); a data directory from \
         before encryption at rest has none",
        PATIENCE.as_secs()
    )
}

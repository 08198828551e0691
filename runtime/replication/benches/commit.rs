//! Store-level durable writes/s (no HTTP, no wasm) at 1 and 64 concurrent writers: the replicated
//! store as a one-member cluster next to the local WAL store, in the same run and on the same
//! disk. Shows what raft costs a single host. Run: `cargo bench -p doppel-replication --bench commit`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_replication::ReplicatedStore;
use doppel_store::{Command, LocalStore, Op, Space, Store};

const SECONDS: u64 = 5;

async fn rate(store: Arc<dyn Store>, writers: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < Duration::from_secs(SECONDS) {
                    let op = Op::Increment {
                        space: Space::bucket("bench", "default"),
                        key: format!("n{w}").into_bytes(),
                        delta: 1,
                    };
                    store.apply(Command::new(op)).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A peer client with a certificate of a throwaway CA (a one-member cluster never calls a peer).
fn peers() -> doppel_replication::PeerClient {
    let ca = doppel_trust::ClusterCa::create("bench").unwrap();
    let key = doppel_trust::HostKey::generate().unwrap();
    let who = doppel_trust::HostIdentity {
        id: 1,
        name: "bench".into(),
        labels: Default::default(),
    };
    let cert = ca
        .issue(
            &key.request().unwrap(),
            &who,
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let own = doppel_replication::Credentials::from_pem(
        &format!("{cert}{}", ca.cert_pem()),
        &key.pem(),
        ca.cert_pem(),
    )
    .unwrap();
    doppel_replication::PeerClient::new(&own).unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Store> = Arc::new(LocalStore::open(dir.path().join("local")).unwrap());
    let replicated: Arc<dyn Store> = rt.block_on(async {
        let node = doppel_replication::start(1, &dir.path().join("raft"), peers())
            .await
            .unwrap();
        let members: BTreeMap<u64, openraft::BasicNode> =
            [(1, openraft::BasicNode::new("127.0.0.1:1"))].into();
        node.raft.initialize(members).await.unwrap();
        Arc::new(ReplicatedStore::new(node, peers()))
    });
    println!("store commits (counter increments), one host:");
    for writers in [1usize, 64] {
        let l = rt.block_on(rate(local.clone(), writers));
        let r = rt.block_on(rate(replicated.clone(), writers));
        println!(
            "  {writers:>2} writers: raft (one member) {r:>8.0}/s   local WAL {l:>8.0}/s   ratio {:.2}",
            r / l
        );
    }
}

//! Three raft nodes on loopback, talking real HTTP over mutual TLS: writes replicate to every
//! node, a write survives the loss of the leader, and a process without a certificate of the
//! cluster's CA, or with one but not a member, is refused.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use doppel_replication::{Credentials, PeerClient, ReplicatedStore, StateMachine, TypeConfig};
use doppel_store::{Command, Op, Outcome, Space};
use doppel_trust::{ClusterCa, HostIdentity, HostKey};
use openraft::{BasicNode, Raft};

/// The test cluster's CA, shared by every node of every test.
static CA: LazyLock<ClusterCa> = LazyLock::new(|| ClusterCa::create("test").unwrap());

/// A certificate from `ca` for host `id`.
fn credentials_from(ca: &ClusterCa, id: u64) -> Credentials {
    let key = HostKey::generate().unwrap();
    let who = HostIdentity {
        id,
        name: format!("n{id}"),
        labels: Default::default(),
    };
    let cert = ca
        .issue(&key.request().unwrap(), &who, Duration::from_secs(3600))
        .unwrap();
    Credentials::from_pem(
        &format!("{cert}{}", ca.cert_pem()),
        &key.pem(),
        ca.cert_pem(),
    )
    .unwrap()
}

fn peers(id: u64) -> PeerClient {
    PeerClient::new(&credentials_from(&CA, id)).unwrap()
}

/// A client presenting host `id`'s certificate from `ca` (none for `None`), trusting the test CA.
fn client_as(ca: &ClusterCa, id: Option<u64>) -> reqwest::Client {
    let tls = match id {
        Some(id) => {
            let own = credentials_from(ca, id);
            doppel_trust::tls::peer_client(own.slot(), own.trusted()).unwrap()
        }
        None => doppel_trust::tls::operator_client(&[CA.cert_der().to_vec()]).unwrap(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

/// Serves `app` on `listener` over mutual TLS, as a host's peer listener does.
async fn serve_tls(listener: tokio::net::TcpListener, app: axum::Router, id: u64) {
    use hyper_util::rt::TokioIo;
    let config = credentials_from(&CA, id).peer_server().unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (config, app) = (config.clone(), app.clone());
        tokio::spawn(async move {
            let Ok((stream, peer)) = doppel_replication::accept(config, stream).await else {
                return;
            };
            let app = hyper_util::service::TowerToHyperService::new(app);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(peer.clone());
                hyper::service::Service::call(&app, req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

struct Node {
    id: u64,
    raft: Raft<TypeConfig>,
    state: StateMachine,
    log: doppel_replication::LogStore,
    gate: doppel_replication::WriteGate,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn node(id: u64) -> Node {
    node_with(id, doppel_replication::config()).await
}

async fn node_with(id: u64, config: openraft::Config) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let doppel_replication::Node {
        raft,
        state,
        log,
        gate,
    } = doppel_replication::start_with(id, dir.path(), peers(id), config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let parts = doppel_replication::Node {
        raft: raft.clone(),
        state: state.clone(),
        log: log.clone(),
        gate: gate.clone(),
    };
    let store = Arc::new(ReplicatedStore::new(parts, peers(id)));
    let (refusals, _) = tokio::sync::mpsc::channel(16);
    let app = doppel_replication::peer_router(store, axum::Router::new(), refusals);
    let server = tokio::spawn(serve_tls(listener, app, id));
    Node {
        id,
        raft,
        state,
        log,
        gate,
        addr,
        server,
        _dir: dir,
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::new(Op::Put {
        space: Space::bucket("svc", "default"),
        key: key.into(),
        value: value.into(),
    })
}

/// Waits (on raft's metrics, not a timer) until one of `nodes` knows a leader other than
/// `not`, and returns its id.
async fn leader(nodes: &[&Node], not: Option<u64>) -> u64 {
    for _ in 0..100 {
        for n in nodes {
            let waited = n
                .raft
                .wait(Some(Duration::from_millis(100)))
                .metrics(
                    |m| m.current_leader.is_some() && m.current_leader != not,
                    "a leader",
                )
                .await;
            if let Ok(m) = waited {
                let id = m.current_leader.unwrap();
                if nodes.iter().any(|n| n.id == id) {
                    return id;
                }
            }
        }
    }
    panic!("no leader was elected");
}

/// Three nodes on loopback, made one cluster (a leader is being elected when this returns).
async fn three_nodes() -> [Node; 3] {
    let nodes = [node(1).await, node(2).await, node(3).await];
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.to_string())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    nodes
}

async fn write_and_check(nodes: &[&Node], leader: u64, key: &str) {
    let leader = nodes.iter().find(|n| n.id == leader).unwrap();
    let response = leader
        .raft
        .client_write(vec![put(key, "value")])
        .await
        .unwrap();
    assert_eq!(response.data, vec![Ok(Outcome::Done)]);
    let index = response.log_id.index;
    for n in nodes {
        n.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "the write is applied")
            .await
            .unwrap();
        let value = n
            .state
            .engine()
            .get(&Space::bucket("svc", "default"), key.as_bytes())
            .unwrap();
        assert_eq!(value, Some(b"value".to_vec()), "node {} misses {key}", n.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() {
    let nodes = three_nodes().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let first = leader(&all, None).await;
    write_and_check(&all, first, "before").await;

    // The leader dies; the other two elect a new one and keep every acknowledged write.
    let dead = nodes.iter().find(|n| n.id == first).unwrap();
    dead.raft.shutdown().await.unwrap();
    dead.server.abort();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != first).collect();
    let second = leader(&survivors, Some(first)).await;
    assert_ne!(second, first);
    for n in &survivors {
        let value = n
            .state
            .engine()
            .get(&Space::bucket("svc", "default"), b"before")
            .unwrap();
        assert_eq!(value, Some(b"value".to_vec()));
    }
    write_and_check(&survivors, second, "after").await;
}

/// Who may call a member: a client without a certificate gets nothing but a 401; one with a
/// certificate from another CA does not finish the handshake; one of this CA that is not a member
/// is refused (403); a member sending in another's name is refused; a member sending garbage gets
/// a clear 400, not a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_with_the_clusters_certificate_are_served() {
    let nodes = three_nodes().await;
    let all: Vec<&Node> = nodes.iter().collect();
    leader(&all, None).await;
    let n = &nodes[0];
    let url = |path: &str| format!("https://{}/raft/v1/{path}", n.addr);
    let anonymous = client_as(&CA, None);
    for path in ["vote", "snapshot", "append-stream", "write", "ping"] {
        let none = anonymous
            .post(url(path))
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        assert_eq!(none.status().as_u16(), 401, "{path}");
    }
    let stranger = ClusterCa::create("another cluster").unwrap();
    let refused = client_as(&stranger, Some(2)).post(url("ping")).send().await;
    assert!(refused.is_err(), "a certificate of another CA was accepted");
    let outsider = client_as(&CA, Some(99));
    for path in ["vote", "write", "ping", "status"] {
        let answer = outsider
            .post(url(path))
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 403, "{path}");
        assert!(answer.text().await.unwrap().contains("not a member"));
    }
    // Node 2 asking for a vote in node 3's name.
    let forged = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(99, 3), None);
    let answer = client_as(&CA, Some(2))
        .post(url("vote"))
        .body(postcard::to_stdvec(&forged).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    assert_eq!(garbage_vote(n).await, 400);
    // The append stream's route, for a member but without asking for the upgrade, says so.
    let plain = client_as(&CA, Some(2))
        .post(url("append-stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    assert!(
        plain
            .text()
            .await
            .unwrap()
            .contains("upgrades the connection")
    );
}

/// Members with different leader leases would depose each other's leaders, so a vote, an append
/// or a snapshot from a host whose lease is not the member's own is refused with both leases
/// named; with the same lease, or naming none (an older host), it is served.
#[tokio::test]
async fn raft_messages_from_a_host_with_another_lease_are_refused() {
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    let ms = Duration::from_millis;
    let member = node_with(2, doppel_replication::config_with_lease(ms(600))).await;
    let to_member = |lease| async move {
        doppel_replication::Network::new(peers(1), lease)
            .new_client(2, &BasicNode::new(member.addr))
            .await
    };
    let vote = VoteRequest::new(openraft::Vote::new(1, 1), None);
    let append = AppendEntriesRequest {
        vote: openraft::Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let option = || RPCOption::new(Duration::from_secs(5));

    let mut other = to_member(ms(300)).await;
    let refused = other.vote(vote.clone(), option()).await.unwrap_err();
    let why = refused.to_string();
    assert!(why.contains("600 ms") && why.contains("300 ms"), "{why}");
    let refused = other
        .append_entries(append.clone(), option())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("600 ms"), "{refused}");

    let mut same = to_member(ms(600)).await;
    same.vote(vote, option()).await.unwrap();
    same.append_entries(append, option()).await.unwrap();

    // A message naming no lease is served (here: refused as garbage, which is past the check).
    assert_eq!(garbage_vote(&member).await, 400);
    let named = client_as(&CA, Some(1))
        .post(format!("https://{}/raft/v1/vote", member.addr))
        .header(doppel_replication::LEASE_HEADER, "300")
        .body(vec![255, 255, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(named.status().as_u16(), 409);
}

/// A garbled append stream (a frame that does not decode, a frame longer than any append may
/// be) is closed; the node goes on serving other streams and requests.
#[tokio::test]
async fn a_garbled_append_stream_is_closed_and_the_node_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = node(1).await;
    let client = client_as(&CA, Some(2));
    let open = || async {
        let response = client
            .post(format!("https://{}/raft/v1/append-stream", n.addr))
            .header("connection", "upgrade")
            .header("upgrade", "doppel-raft-append/1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 101);
        response.upgrade().await.unwrap()
    };
    let not_an_append = [3u8, 0, 0, 0, 255, 255, 255];
    let too_long = u32::MAX.to_le_bytes();
    for frame in [&not_an_append[..], &too_long[..]] {
        let mut stream = open().await;
        stream.write_all(frame).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the node closes the stream");
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
    }
    assert_eq!(garbage_vote(&n).await, 400, "the node still answers");
}

/// The status a vote request with a garbage body gets from `n`, sent by a member (host 2).
async fn garbage_vote(n: &Node) -> u16 {
    client_as(&CA, Some(2))
        .post(format!("https://{}/raft/v1/vote", n.addr))
        .body(vec![255, 255, 255])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn cluster() -> Vec<Node> {
    let nodes = vec![node(1).await, node(2).await, node(3).await];
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.to_string())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    leader(&all, None).await;
    nodes
}

fn store(n: &Node) -> doppel_replication::ReplicatedStore {
    let node = doppel_replication::Node {
        raft: n.raft.clone(),
        state: n.state.clone(),
        log: n.log.clone(),
        gate: n.gate.clone(),
    };
    doppel_replication::ReplicatedStore::new(node, peers(n.id))
}

/// Every host answers reads and writes, linearizably: a write through one follower is seen by a
/// read through another at once, and the state machine's refusals come back through forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_host_reads_and_writes_through_the_store_trait() {
    use doppel_store::{ApplyError, Store, StoreError};
    let nodes = cluster().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let lead = leader(&all, None).await;
    let followers: Vec<&Node> = nodes.iter().filter(|n| n.id != lead).collect();
    let (a, b) = (store(followers[0]), store(followers[1]));
    let space = Space::bucket("svc", "default");
    for i in 0..20 {
        let key = format!("k{i}");
        assert_eq!(a.apply(put(&key, "v")).await.unwrap(), Outcome::Done);
        assert_eq!(
            b.get(&space, key.as_bytes()).await.unwrap(),
            Some(b"v".to_vec()),
            "read after write of {key}"
        );
    }
    let counter = |delta| {
        Command::new(Op::Increment {
            space: space.clone(),
            key: b"n".to_vec(),
            delta,
        })
    };
    assert_eq!(a.apply(counter(2)).await.unwrap(), Outcome::Counter(2));
    assert_eq!(b.apply(counter(3)).await.unwrap(), Outcome::Counter(5));
    let refused = b.apply(put("big", &"x".repeat(500)).with_quota(100)).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Rejected(ApplyError::QuotaExceeded { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(a.get(&space, b"big").await.unwrap(), None);
}

/// A host cut off from the majority acknowledges nothing: its writes and reads fail as
/// unavailable within the timeout, and it never decides alone that the others are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_without_a_majority_acknowledges_nothing() {
    use doppel_store::{Store, StoreError};
    let nodes = cluster().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let lead = leader(&all, None).await;
    // Keep the leader alone: the two others stop.
    for n in nodes.iter().filter(|n| n.id != lead) {
        n.raft.shutdown().await.unwrap();
        n.server.abort();
    }
    let alone = nodes.iter().find(|n| n.id == lead).unwrap();
    let lonely = store(alone).with_timeout(Duration::from_millis(1500));
    let write = lonely.apply(put("lost", "v")).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    let read = lonely.get(&Space::bucket("svc", "default"), b"lost").await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
}

/// A lone write is proposed at once, and writes that arrive together share entries: 200
/// increments at once through one host all count, in far fewer raft entries than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_all_count() {
    use doppel_store::Store;
    let nodes = cluster().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let lead = leader(&all, None).await;
    let leader_node = nodes.iter().find(|n| n.id == lead).unwrap();
    let s = std::sync::Arc::new(store(leader_node));
    let space = Space::bucket("svc", "default");
    let before = leader_node.log.reach().index;
    assert_eq!(s.apply(put("lone", "v")).await.unwrap(), Outcome::Done);
    assert_eq!(
        leader_node.log.reach().index,
        before + 1,
        "one write, one entry"
    );
    let increment = || {
        Command::new(Op::Increment {
            space: space.clone(),
            key: b"n".to_vec(),
            delta: 1,
        })
    };
    let before = leader_node.log.reach().index;
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (s, command) = (s.clone(), increment());
        writers.spawn(async move { s.apply(command).await });
    }
    let mut counts = Vec::new();
    while let Some(outcome) = writers.join_next().await {
        match outcome.unwrap().unwrap() {
            Outcome::Counter(n) => counts.push(n),
            other => panic!("{other:?}"),
        }
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=200).collect::<Vec<i64>>(),
        "each increment counted once"
    );
    let entries = leader_node.log.reach().index - before;
    assert!(entries < 20, "200 writes took {entries} entries");
}

/// A leader that removes itself proposes no write behind its removal: followers' writes in
/// flight all along are answered (by it before the change, by the next leader after), none
/// fails. Before the leader closed its write gate, a write it proposed after appending its
/// removal was committed by the next leader but never answered by it: the follower waited out
/// the store's timeout and failed the write ("leader … unreachable: operation timed out").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_removing_itself_fails_no_write_forwarded_to_it() {
    use doppel_store::Store as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let nodes = three_nodes().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let first = leader(&all, None).await;
    let old = nodes.iter().find(|n| n.id == first).unwrap();
    // Writes through both followers, so that some reach the leader at every moment.
    let through: Vec<_> = nodes
        .iter()
        .filter(|n| n.id != first)
        .map(|n| Arc::new(store(n).with_timeout(Duration::from_secs(3))))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (through, stop) = (through[w % 2].clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match through.apply(put(&format!("w{w}-{i}"), "v")).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    // Writes are flowing through the follower to the leader; then the leader removes itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    store(old).remove_member(first).await.unwrap();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != first).collect();
    leader(&survivors, Some(first)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in writers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 100, "only {ok} writes went through");
    assert!(
        failed.is_empty(),
        "{} of {} writes failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );
}

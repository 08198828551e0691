//! Behaviour of the local store: operations, limits, and recovery from what a crash leaves.

use std::io::Write;
use std::path::Path;

use doppel_store::{ApplyError, Command, LocalStore, Op, Outcome, Space, Store, StoreError};

fn put(space: &Space, key: &str, value: &str) -> Command {
    Command::new(Op::Put {
        space: space.clone(),
        key: key.into(),
        value: value.into(),
    })
}

#[tokio::test]
async fn put_get_delete_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let a = Space::bucket("svc", "default");
    let b = Space::bucket("svc", "other");
    for k in ["k3", "k1", "k2"] {
        store.apply(put(&a, k, "v")).await.unwrap();
    }
    store.apply(put(&b, "k9", "w")).await.unwrap();
    assert_eq!(store.get(&a, b"k1").await.unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.get(&b, b"k1").await.unwrap(), None);
    let keys = store.list_keys(&a, None, 2).await.unwrap();
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    let rest = store.list_keys(&a, Some(b"k2"), 10).await.unwrap();
    assert_eq!(rest, vec![b"k3".to_vec()]);
    assert_eq!(
        store.buckets("svc").await.unwrap(),
        vec!["default", "other"]
    );
    store
        .apply(Command::new(Op::Delete {
            space: a.clone(),
            key: b"k1".to_vec(),
        }))
        .await
        .unwrap();
    assert_eq!(store.get(&a, b"k1").await.unwrap(), None);
    // Another service sees none of it.
    assert!(store.buckets("sv").await.unwrap().is_empty());
    assert_eq!(
        store
            .get(&Space::bucket("other-svc", "default"), b"k2")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn counters_and_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let s = Space::bucket("svc", "");
    let inc = |delta| {
        Command::new(Op::Increment {
            space: s.clone(),
            key: b"n".to_vec(),
            delta,
        })
    };
    assert_eq!(store.apply(inc(5)).await.unwrap(), Outcome::Counter(5));
    assert_eq!(store.apply(inc(-7)).await.unwrap(), Outcome::Counter(-2));
    assert_eq!(store.get(&s, b"n").await.unwrap(), Some(b"-2".to_vec()));
    store.apply(put(&s, "text", "hello")).await.unwrap();
    let refused = store
        .apply(Command::new(Op::Increment {
            space: s.clone(),
            key: b"text".to_vec(),
            delta: 1,
        }))
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Rejected(ApplyError::NotACounter))
    ));
    store
        .apply(put(&s, "big", &i64::MAX.to_string()))
        .await
        .unwrap();
    let refused = store
        .apply(Command::new(Op::Increment {
            space: s.clone(),
            key: b"big".to_vec(),
            delta: 1,
        }))
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Rejected(ApplyError::Overflow))
    ));

    let cas = |expected: Option<&str>, value: &str| {
        Command::new(Op::CompareAndSwap {
            space: s.clone(),
            key: b"c".to_vec(),
            expected: expected.map(|e| e.into()),
            value: value.into(),
        })
    };
    assert_eq!(store.apply(cas(None, "1")).await.unwrap(), Outcome::Done);
    assert_eq!(
        store.apply(cas(None, "2")).await.unwrap(),
        Outcome::Conflict {
            current: Some(b"1".to_vec())
        }
    );
    assert_eq!(
        store.apply(cas(Some("1"), "2")).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(store.get(&s, b"c").await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test]
async fn quota_refuses_growth_but_allows_shrinking() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let s = Space::bucket("svc", "default");
    let quota = 200;
    let big = "x".repeat(150);
    store
        .apply(put(&s, "a", &big).with_quota(quota))
        .await
        .unwrap();
    let used = store.usage("svc").await.unwrap();
    assert!(used > 150 && used <= quota, "usage {used}");
    let refused = store.apply(put(&s, "b", &big).with_quota(quota)).await;
    assert!(matches!(
        refused,
        Err(StoreError::Rejected(ApplyError::QuotaExceeded { .. }))
    ));
    assert_eq!(
        store.get(&s, b"b").await.unwrap(),
        None,
        "a refused write changes nothing"
    );
    assert_eq!(store.usage("svc").await.unwrap(), used);
    // Overwriting with something smaller and deleting are always allowed.
    store
        .apply(put(&s, "a", "small").with_quota(quota))
        .await
        .unwrap();
    store
        .apply(
            Command::new(Op::Delete {
                space: s.clone(),
                key: b"a".to_vec(),
            })
            .with_quota(quota),
        )
        .await
        .unwrap();
    assert_eq!(store.usage("svc").await.unwrap(), 0);
    // Batch writes are all or nothing.
    let pairs = vec![
        (b"p".to_vec(), big.clone().into_bytes()),
        (b"q".to_vec(), big.into_bytes()),
    ];
    let refused = store
        .apply(
            Command::new(Op::PutMany {
                space: s.clone(),
                pairs,
            })
            .with_quota(quota),
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(store.get(&s, b"p").await.unwrap(), None);
}

#[tokio::test]
async fn purge_removes_one_service_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store
        .apply(put(&Space::bucket("a", "x"), "k", "v"))
        .await
        .unwrap();
    store
        .apply(put(&Space::bucket("a", "y"), "k", "v"))
        .await
        .unwrap();
    store
        .apply(put(&Space::bucket("ab", "x"), "k", "v"))
        .await
        .unwrap();
    store
        .apply(Command::new(Op::PurgeService {
            service: "a".into(),
        }))
        .await
        .unwrap();
    assert!(store.buckets("a").await.unwrap().is_empty());
    assert_eq!(store.usage("a").await.unwrap(), 0);
    assert_eq!(
        store.get(&Space::bucket("ab", "x"), b"k").await.unwrap(),
        Some(b"v".to_vec())
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What a SIGKILL leaves on disk is the files as they are at that instant, with sled never
/// checkpointed: copying the directory of a live store after its writes were acknowledged gives
/// exactly that picture. Every acknowledged write must come back from the log.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_a_crash_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalStore::open(dir.path()).unwrap());
    let s = Space::bucket("svc", "default");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                store
                    .apply(put(&s, &format!("{t}-{i}"), "v"))
                    .await
                    .unwrap();
                store
                    .apply(Command::new(Op::Increment {
                        space: s.clone(),
                        key: b"n".to_vec(),
                        delta: 1,
                    }))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    copy_dir(dir.path(), image.path());
    let recovered = LocalStore::open(image.path()).unwrap();
    for t in 0..16 {
        for i in 0..50 {
            let key = format!("{t}-{i}");
            assert!(
                recovered.get(&s, key.as_bytes()).await.unwrap().is_some(),
                "lost {key}"
            );
        }
    }
    assert_eq!(
        recovered.get(&s, b"n").await.unwrap(),
        Some(b"800".to_vec())
    );
}

/// A record torn by a crash mid-write was never acknowledged: recovery drops it and keeps the rest.
#[tokio::test]
async fn torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = Space::bucket("svc", "default");
    {
        let store = LocalStore::open(dir.path()).unwrap();
        store.apply(put(&s, "kept", "v")).await.unwrap();
        let image = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), image.path());
        drop(store);
        // Replace the directory with the crash image and tear the last record.
        std::fs::remove_dir_all(dir.path()).unwrap();
        copy_dir(image.path(), dir.path());
    }
    let wal = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&s, b"kept").await.unwrap(), Some(b"v".to_vec()));
    store.apply(put(&s, "after", "w")).await.unwrap();
    drop(store);
    let store = LocalStore::open(dir.path()).unwrap();
    assert_eq!(store.get(&s, b"after").await.unwrap(), Some(b"w".to_vec()));
}

#[tokio::test]
async fn closed_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    store.close_blocking();
    let refused = store.apply(put(&Space::bucket("s", "b"), "k", "v")).await;
    assert!(matches!(refused, Err(StoreError::Closed)));
}

fn place(service: &str, epoch: u64, deposed: &[u64]) -> Command {
    Command::new(Op::Place {
        service: service.into(),
        epoch,
        placement: format!("active at epoch {epoch}").into_bytes(),
        deposed: deposed.to_vec(),
    })
}

// Hosts in this test: A (id 1) active first, B (id 2) added, then A deposed.
const A: u64 = 1;
const B: u64 = 2;

#[tokio::test]
async fn deposed_writers_are_fenced_and_placements_race_safely() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let space = Space::bucket("svc", "default");
    assert_eq!(
        store.apply(place("svc", 1, &[])).await.unwrap(),
        Outcome::Done
    );
    store
        .apply(put(&space, "k", "A at epoch 1").written_by(A, 1))
        .await
        .unwrap();
    // B is added (epoch 2) and nobody is deposed: A's request that started at epoch 1 still writes.
    store.apply(place("svc", 2, &[])).await.unwrap();
    store
        .apply(put(&space, "k", "A still at epoch 1").written_by(A, 1))
        .await
        .unwrap();
    // A is deposed at epoch 3. Two deciding at once: only the first wins.
    store.apply(place("svc", 3, &[A])).await.unwrap();
    let lost = store.apply(place("svc", 3, &[B])).await;
    assert!(
        matches!(
            lost,
            Err(StoreError::Rejected(ApplyError::StaleEpoch {
                proposed: 3,
                current: 3
            }))
        ),
        "{lost:?}"
    );
    assert_eq!(
        store.get(&Space::placements(), b"svc").await.unwrap(),
        Some(b"active at epoch 3".to_vec())
    );
    // The deposed writer (A, epoch 2) is refused and changes nothing; B, which stayed, writes
    // with the epoch its request started at.
    let fenced = store
        .apply(put(&space, "k", "from the deposed host").written_by(A, 2))
        .await;
    assert!(
        matches!(
            fenced,
            Err(StoreError::Rejected(ApplyError::Fenced {
                writer: 2,
                deposed_at: 3
            }))
        ),
        "{fenced:?}"
    );
    assert_eq!(
        store.get(&space, b"k").await.unwrap(),
        Some(b"A still at epoch 1".to_vec())
    );
    store
        .apply(put(&space, "k", "B at epoch 2").written_by(B, 2))
        .await
        .unwrap();
    // A taken back later writes again from the epoch that brought it back.
    store.apply(place("svc", 4, &[])).await.unwrap();
    store
        .apply(put(&space, "k", "A at epoch 4").written_by(A, 4))
        .await
        .unwrap();
    // Every placement is kept in the history, in epoch order.
    let history = store
        .list_keys(&Space::placement_history(), None, 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 4, "{history:?}");
    assert!(history.windows(2).all(|w| w[0] < w[1]));
    // Other services and unfenced (operator) writes are unaffected.
    store
        .apply(put(&Space::bucket("other", "default"), "k", "v").written_by(A, 0))
        .await
        .unwrap();
    store.apply(put(&space, "op", "v")).await.unwrap();
}

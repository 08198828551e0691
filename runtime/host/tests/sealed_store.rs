//! `SealedStore` over a real store (sled files on disk), attacked by someone who can write the
//! store underneath it — a host's disk, a tampered log replayed — but holds no key: what they
//! change is detected and never served, and what they read says nothing.

use std::sync::Arc;

use doppel_host::sealing::{ClusterKey, KEYRING, SealedStore};
use doppel_store::{Command, LocalStore, Op, Outcome, Space, Store, StoreError};

fn sealed_over(raw: Arc<LocalStore>) -> SealedStore {
    let sealed = SealedStore::new(raw);
    sealed.set_cluster_key(Arc::new(ClusterKey::generate()));
    sealed
}

async fn put(store: &dyn Store, space: &Space, key: &str, value: &str) {
    store
        .apply(Command::new(Op::Put {
            space: space.clone(),
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }))
        .await
        .unwrap();
}

/// Every stored key and value of `space`, raw.
async fn raw_rows(raw: &LocalStore, space: &Space) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    for key in raw.list_keys(space, None, 1000).await.unwrap() {
        let value = raw.get(space, &key).await.unwrap().unwrap();
        rows.push((key, value));
    }
    rows
}

#[tokio::test]
async fn what_lies_underneath_is_ciphertext_and_tampering_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let raw = Arc::new(LocalStore::open(dir.path()).unwrap());
    let sealed = sealed_over(raw.clone());
    let people = Space::bucket("registry", "people");
    put(&sealed, &people, "anna@example.de", "born 1990 in Bonn").await;
    let (anna_key, anna_value) = raw_rows(&raw, &people).await.pop().unwrap();
    put(&sealed, &people, "bert@example.de", "born 1985 in Kiel").await;
    assert_eq!(
        sealed.get(&people, b"anna@example.de").await.unwrap(),
        Some(b"born 1990 in Bonn".to_vec())
    );
    let mut listed = sealed.list_keys(&people, None, 10).await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![b"anna@example.de".to_vec(), b"bert@example.de".to_vec()]
    );

    // Underneath: neither a key nor a value in clear, and the data key only wrapped.
    let rows = raw_rows(&raw, &people).await;
    assert_eq!(rows.len(), 2);
    for (key, value) in &rows {
        for clear in [&b"anna"[..], b"bert", b"born", b"Bonn", b"Kiel"] {
            assert!(!key.windows(clear.len()).any(|w| w == clear));
            assert!(!value.windows(clear.len()).any(|w| w == clear));
        }
    }
    assert!(
        raw.get(&Space::system(KEYRING), b"registry")
            .await
            .unwrap()
            .is_some()
    );

    // Anna's record moved under Bert's key: it does not open there.
    let (bert_key, _) = rows.iter().find(|(k, _)| *k != anna_key).cloned().unwrap();
    raw.apply(Command::new(Op::Put {
        space: people.clone(),
        key: bert_key,
        value: anna_value.clone(),
    }))
    .await
    .unwrap();
    let err = sealed.get(&people, b"bert@example.de").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");

    // One byte of Anna's own value flipped: refused, not served.
    let mut flipped = anna_value.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    raw.apply(Command::new(Op::Put {
        space: people.clone(),
        key: anna_key.clone(),
        value: flipped,
    }))
    .await
    .unwrap();
    let err = sealed.get(&people, b"anna@example.de").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.to_string().contains("anna"), "{err}");

    // Counters and compare-and-swap work on the opened values.
    let counters = Space::bucket("registry", "counters");
    for _ in 0..3 {
        sealed
            .apply(Command::new(Op::Increment {
                space: counters.clone(),
                key: b"visits".to_vec(),
                delta: 2,
            }))
            .await
            .unwrap();
    }
    assert_eq!(
        sealed.get(&counters, b"visits").await.unwrap(),
        Some(b"6".to_vec())
    );
    let swap = |expected: &str, value: &str| Command {
        op: Op::CompareAndSwap {
            space: counters.clone(),
            key: b"visits".to_vec(),
            expected: Some(expected.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
        },
        quota: None,
        writer: None,
    };
    assert_eq!(
        sealed.apply(swap("5", "x")).await.unwrap(),
        Outcome::Conflict {
            current: Some(b"6".to_vec())
        }
    );
    assert_eq!(sealed.apply(swap("6", "7")).await.unwrap(), Outcome::Done);

    // Erasure: the data key goes first; nothing of the service opens any more.
    sealed
        .apply(Command::new(Op::PurgeService {
            service: "registry".into(),
        }))
        .await
        .unwrap();
    assert!(
        raw.get(&Space::system(KEYRING), b"registry")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(sealed.get(&people, b"bert@example.de").await.unwrap(), None);
}

//! What survives a restart: the raft log, the vote, the applied state, snapshots.

use std::io::Write;

use doppel_replication::{LogStore, StateMachine};
use doppel_store::{Command, Op, Outcome, Space};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, RaftLogReader, RaftSnapshotBuilder, Vote};

fn put(index: u64, key: &str) -> Entry<doppel_replication::TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(vec![Command::new(Op::Put {
            space: Space::bucket("svc", "default"),
            key: key.into(),
            value: format!("v{index}").into(),
        })]),
    }
}

#[tokio::test]
async fn the_log_vote_and_committed_id_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 7)).await.unwrap();
        log.blocking_append((1..=10).map(|i| put(i, "k")))
            .await
            .unwrap();
        log.truncate(log_id(1, 1, 9)).await.unwrap();
        log.purge(log_id(1, 1, 3)).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 8))).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 8)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 8)));
    let indexes: Vec<u64> = log
        .try_get_log_entries(0..100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(indexes, (4..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_record_at_the_end_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=3).map(|i| put(i, "k")))
            .await
            .unwrap();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("raft-log"))
        .unwrap();
    f.write_all(&[40, 0, 0, 0, 9, 9, 9, 9, 1, 2]).unwrap();
    drop(f);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 1, 3))
    );
    log.blocking_append([put(4, "k")]).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 1, 4))
    );
}

#[tokio::test]
async fn applied_state_survives_and_snapshots_install_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let space = Space::bucket("svc", "default");
    {
        let mut sm = StateMachine::open(&dir.path().join("a")).unwrap();
        let answers = sm
            .apply((1..=5).map(|i| put(i, &format!("k{i}"))))
            .await
            .unwrap();
        assert_eq!(answers, vec![vec![Ok(Outcome::Done)]; 5]);
        let mut builder = sm.get_snapshot_builder().await;
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1, 5)));

        // Another host installs the snapshot and holds the same state.
        let mut other = StateMachine::open(&dir.path().join("b")).unwrap();
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(
            other.applied_state().await.unwrap().0,
            Some(log_id(1, 1, 5))
        );
        assert_eq!(
            other.engine().get(&space, b"k3").unwrap(),
            Some(b"v3".to_vec())
        );
        assert!(other.get_current_snapshot().await.unwrap().is_some());
    }
    let mut sm = StateMachine::open(&dir.path().join("a")).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 5)));
    assert_eq!(
        sm.engine().get(&space, b"k5").unwrap(),
        Some(b"v5".to_vec())
    );
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the snapshot was kept");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 1, 5)));
}

/// Applies are not synced; a snapshot lets openraft drop the log before it. If a crash leaves the
/// applied state older than the snapshot (here: a state directory that never saw the applies, next
/// to the synced snapshot file), opening restores the snapshot.
#[tokio::test]
async fn an_applied_state_older_than_the_snapshot_is_restored_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let space = Space::bucket("svc", "default");
    {
        let mut sm = StateMachine::open(&dir.path().join("a")).unwrap();
        sm.apply((1..=5).map(|i| put(i, &format!("k{i}"))))
            .await
            .unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
    }
    // The crash image: the snapshot survived, the applies did not.
    let lost = dir.path().join("lost");
    std::fs::create_dir_all(&lost).unwrap();
    std::fs::copy(dir.path().join("a/snapshot"), lost.join("snapshot")).unwrap();
    let mut sm = StateMachine::open(&lost).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1, 5)));
    for i in 1..=5 {
        assert_eq!(
            sm.engine().get(&space, format!("k{i}").as_bytes()).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
}

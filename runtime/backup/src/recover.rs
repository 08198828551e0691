//! A new one-host cluster from a lone survivor's own state, when a majority of its cluster is
//! lost for good (`doppel recover --force-new-cluster`).
//!
//! The survivor's data directory becomes what a restore makes. Its old membership — raft
//! storage, certificates, identity, endpoint and token files — is moved aside into
//! `DATA/superseded-TIME` (kept, never deleted: it is evidence), and its state, rebuilt from
//! there, waits in `DATA/restore`. The next `doppel host --data DATA` starts a new cluster (new
//! identity and CA) and takes the services over as from a restored backup; the other hosts
//! join it afresh with invitations.
//!
//! The steps can be interrupted anywhere: `DATA/recovering` names the superseded directory
//! while they run, a host refuses to start on a directory that holds it, and running the
//! command again finishes the job from the moved-aside storage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use doppel_replication::NodeId;
use doppel_replication::recovery::{LocalRaft, Survey, reachable};
use doppel_store::{Engine, Space, portable};
use serde::Serialize;

use crate::BackupError;
use crate::restore::{Restored, restore_dir};

/// What makes a data directory a member's; moved aside together.
const MEMBERSHIP: [&str; 5] = ["raft", "tls", "cluster.json", "host.json", "admin-token"];

/// Names the superseded directory while a recovery runs.
fn marker(data: &Path) -> PathBuf {
    data.join("recovering")
}

/// Whether a recovery of `data` was started and not finished; a host must not start on it.
pub fn interrupted(data: &Path) -> bool {
    marker(data).exists()
}

/// A stopped host's data directory, read for a recovery.
pub struct Survivor {
    data: PathBuf,
    id: NodeId,
    /// Where its raft storage is now: `DATA/raft`, or the superseded copy when an interrupted
    /// recovery moved it already.
    superseded: Option<PathBuf>,
    local: LocalRaft,
    /// How far its storage reaches.
    pub survey: Survey,
}

/// Another member of the lost cluster, and whether anything answers at its address.
#[derive(Clone, Debug, Serialize)]
pub struct OtherMember {
    /// Its raft id.
    pub id: NodeId,
    /// Its peer address.
    pub addr: String,
    /// Whether its address accepted a connection.
    pub reachable: bool,
}

/// What a recovery did.
#[derive(Clone, Debug, Serialize)]
pub struct Recovered {
    /// The index the new cluster's state stands at: every entry this host's log held.
    pub index: u64,
    /// The last entry this host had applied.
    pub applied: u64,
    /// The last entry this host knew to be committed. Entries after it up to `index` are kept
    /// though their commit was never confirmed here; entries after `index` that the lost hosts
    /// may have committed are missing.
    pub committed: u64,
    /// The services whose records it holds.
    pub services: Vec<String>,
    /// How many service-state keys it holds.
    pub keys: u64,
    /// The state hash `doppel status --hash` answers once the host has taken it over.
    pub hash: String,
    /// Where the old membership was moved.
    pub superseded: PathBuf,
    /// The other members of the old cluster.
    pub lost: Vec<OtherMember>,
}

impl Survivor {
    /// Reads the data directory `data` of a stopped host.
    pub fn open(data: &Path) -> Result<Survivor, BackupError> {
        let superseded = match std::fs::read_to_string(marker(data)) {
            Ok(name) => Some(data.join(name.trim())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        // An interrupted run may have moved some of the membership aside already.
        let find = |name: &str| match &superseded {
            Some(dir) if dir.join(name).exists() => dir.clone(),
            _ => data.to_path_buf(),
        };
        let home = find("cluster.json");
        let id = doppel_replication::member_id(&home)
            .map_err(|e| BackupError::NotFound(e.to_string()))?
            .ok_or_else(|| {
                BackupError::NotFound(format!(
                    "{} holds no cluster member (no cluster.json); there is nothing to recover",
                    home.display()
                ))
            })?;
        let raft = find("raft").join("raft");
        let local = LocalRaft::open(&raft).map_err(|e| {
            BackupError::Broken(format!(
                "cannot read the raft storage in {}: {e}",
                raft.display()
            ))
        })?;
        let survey = local.survey();
        Ok(Survivor {
            data: data.to_path_buf(),
            id,
            superseded,
            local,
            survey,
        })
    }

    /// This host's raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The other members of its cluster, each probed at its peer address.
    pub async fn others(&self, timeout: Duration) -> Vec<OtherMember> {
        let others: Vec<(NodeId, String)> = self
            .survey
            .members
            .iter()
            .filter(|(id, _)| *id != self.id)
            .cloned()
            .collect();
        let up = reachable(&others, timeout).await;
        others
            .into_iter()
            .zip(up)
            .map(|((id, addr), reachable)| OtherMember {
                id,
                addr,
                reachable,
            })
            .collect()
    }

    /// Why a new cluster must not be forced from here, given what `others` found: when this
    /// host and the reachable members make a majority, the cluster can still commit, and a
    /// second cluster would split it in two.
    pub fn refusal(&self, others: &[OtherMember]) -> Option<String> {
        let members = others.len() + 1;
        let up = 1 + others.iter().filter(|o| o.reachable).count();
        if up * 2 <= members {
            return None;
        }
        let answering: Vec<&str> = others
            .iter()
            .filter(|o| o.reachable)
            .map(|o| o.addr.as_str())
            .collect();
        Some(if answering.is_empty() {
            "this host alone is its cluster's majority: start it as it is".to_string()
        } else {
            format!(
                "{up} of the cluster's {members} members are reachable (a majority): {} answer(s); \
                 start this host again and it rejoins them — forcing a new cluster would split it",
                answering.join(", ")
            )
        })
    }

    /// Rebuilds the state for the next host start and moves the old membership aside.
    pub fn recover(self, others: Vec<OtherMember>) -> Result<Recovered, BackupError> {
        let data = self.data.clone();
        let superseded = match &self.superseded {
            Some(dir) => dir.clone(),
            None => {
                let name = format!("superseded-{}", crate::rfc3339(crate::now_ms()));
                std::fs::write(marker(&data), &name)?;
                data.join(name)
            }
        };
        let Survivor { local, survey, .. } = self;
        let work = data.join("restore-partial");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let engine = Engine::open(&work.join("state"))?;
        let index = local.rebuild(&engine).map_err(|e| {
            BackupError::Broken(format!(
                "cannot rebuild the state from the raft storage: {e}"
            ))
        })?;
        // Closed before it moves: sled reopens its files by path.
        drop(local);
        let (hash, keys) = portable::state_hash(&engine.export()?);
        let services: Vec<String> = engine
            .list_keys(&Space::system("services"), None, usize::MAX)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect();
        engine.checkpoint()?;
        drop(engine);
        std::fs::create_dir_all(&superseded)?;
        for name in MEMBERSHIP {
            let from = data.join(name);
            if from.exists() {
                std::fs::rename(&from, superseded.join(name))?;
            }
        }
        let restored = Restored {
            url: format!("recovered from {}", superseded.display()),
            index,
            last_write_ms: modified_ms(&superseded.join("raft")),
            services: services.clone(),
            keys,
            hash: hex::encode(hash),
            objects: 0,
            object_bytes: 0,
            signer: String::new(),
        };
        std::fs::write(
            work.join("restored.json"),
            serde_json::to_vec_pretty(&restored).expect("always encodes"),
        )?;
        let _ = std::fs::remove_dir_all(restore_dir(&data));
        std::fs::rename(&work, restore_dir(&data))?;
        std::fs::remove_file(marker(&data))?;
        Ok(Recovered {
            index,
            applied: survey.applied,
            committed: survey.committed,
            services,
            keys,
            hash: restored.hash,
            superseded,
            lost: others,
        })
    }
}

/// When the raft log in `raft` was last written (ms since the Unix epoch), 0 if unknown.
fn modified_ms(raft: &Path) -> u64 {
    std::fs::metadata(raft.join("log").join("raft-log"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

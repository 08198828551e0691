//! Certificates that renew themselves and a cluster CA that rotates, both while clients write:
//! no acknowledged write may fail or be lost, and what the old CA signed is refused afterwards.

use std::path::Path;
use std::time::{Duration, SystemTime};

use doppel_guests as guests;
use doppel_trust::{ClusterCa, HostIdentity};

use crate::support::{
    Load, assert_all_readable, cluster, cluster_each, eventually, eventually_within, id_of, name,
    peer_http_as,
};

/// The SHA-256 fingerprints of the certificates in a PEM file, in order.
fn fingerprints(path: &Path) -> Vec<String> {
    let pem = std::fs::read_to_string(path).unwrap();
    doppel_trust::certificates(&pem)
        .unwrap()
        .iter()
        .map(|der| doppel_trust::fingerprint(der))
        .collect()
}

/// `doppel cluster rotate-ca` under continuous writes through every host: every write is
/// acknowledged, every acknowledged write is readable, every host ends with a certificate from
/// the new CA and trusts only it, the CLI on each machine goes on working (it reads the new
/// `ca.pem`), and a certificate the old CA signs is refused from then on.
#[test]
fn the_ca_rotates_under_writes_with_no_failed_write() {
    let hosts = cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let old_ca = fingerprints(&hosts[0].data.join("tls/ca.pem"));
    assert_eq!(old_ca.len(), 1);
    let old_key = std::fs::read_to_string(hosts[0].data.join("tls/ca.key")).unwrap();
    let old_pem = std::fs::read_to_string(hosts[0].data.join("tls/ca.pem")).unwrap();

    let urls: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
    let load = Load::start(&urls, 6, "rot");
    load.wait_for(200);
    let out = hosts[1].cli_ok(&["cluster", "rotate-ca"]);
    assert!(out.contains("rotated the cluster CA from"), "{out}");
    load.wait_for(200);
    let (acked, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "{} writes failed during the rotation, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for h in &hosts {
        assert_all_readable(h, &acked);
    }

    let new_ca = fingerprints(&hosts[2].data.join("tls/ca.pem"));
    assert_eq!(new_ca.len(), 1, "the old CA is still trusted");
    assert_ne!(new_ca, old_ca);
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(fingerprints(&h.data.join("tls/ca.pem")), new_ca);
        assert_eq!(
            fingerprints(&h.data.join("tls/host.pem"))[1],
            new_ca[0],
            "host {}'s certificate is not from the new CA",
            name(i)
        );
        // The CLI beside each host trusts the new CA from the data directory.
        h.cli_ok(&["status"]);
        assert!(h.log().contains("renewed this host's certificate"));
    }
    // The host that keeps the CA key for offline keeping keeps the new one.
    assert_ne!(
        std::fs::read_to_string(hosts[0].data.join("tls/ca.key")).unwrap(),
        old_key
    );
    println!(
        "rotated under load: {} writes acknowledged, 0 failed, all readable on 3 hosts",
        acked.len()
    );

    // Whoever kept the old CA key can still sign, but what it signs is refused.
    let dir = tempfile::tempdir().unwrap();
    let old = ClusterCa::from_pem(&old_pem, &old_key).unwrap();
    let b = HostIdentity {
        id: id_of(&hosts[1]).parse().unwrap(),
        name: "b".into(),
        labels: Default::default(),
    };
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let tls = dir.path().join("old");
    let roots = std::fs::read_to_string(hosts[0].data.join("tls/ca.pem")).unwrap();
    crate::trust::write_certificate(&tls, &old, &b, now - hour, now + hour, &roots);
    let ping = format!("https://{}/raft/v1/ping", hosts[0].peer);
    let refused = peer_http_as(&tls).post(&ping).send();
    assert!(
        refused.is_err(),
        "a certificate from the retired CA was served: {refused:?}"
    );
    // The rotation is in the audit trail, with who asked for it.
    let audit = hosts[0].cli_ok(&["audit", "--json"]);
    assert!(audit.contains("rotate-ca"), "{audit}");
}

/// With 12-second certificates, every host renews its own several times while clients write,
/// and no write fails.
#[test]
fn certificates_renew_themselves_before_they_expire() {
    let hosts = cluster_each(&[&["--cert-lifetime", "12s"], &[], &[]]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let first: Vec<String> = hosts
        .iter()
        .map(|h| fingerprints(&h.data.join("tls/host.pem"))[0].clone())
        .collect();
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
    let load = Load::start(&urls, 4, "renew");
    // A 12 s certificate is renewed when 4 s are left: twice within about 20 s. Waiting for two
    // renewals outlives the first certificate of every host.
    for h in &hosts {
        eventually_within(Duration::from_secs(60), "two renewals", || {
            h.log().matches("renewed this host's certificate").count() >= 2
        });
    }
    load.wait_for(100);
    let (acked, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "{} writes failed across renewals, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    for (i, (h, first)) in hosts.iter().zip(&first).enumerate() {
        let now = &fingerprints(&h.data.join("tls/host.pem"))[0];
        assert_ne!(
            now,
            first,
            "host {} still has its first certificate",
            name(i)
        );
        assert_all_readable(h, &acked);
    }
}

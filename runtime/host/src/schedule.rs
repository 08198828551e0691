//! Placement decisions: which hosts a service should be active on, given its rules (`--on`,
//! `--replicas`), the hosts' labels and health, and where it is active now. Pure functions: the
//! failover loop, deploys and migrations act on what they return.
//!
//! The rules of thumb, in order: a dead host is dropped at once (and fenced); an eligible live
//! host keeps the service (no needless moves); missing replicas go to the least busy eligible
//! hosts; a live host that may no longer run the service (drained, or its labels no longer match)
//! hands it over gracefully; and a service runs on a drained host rather than nowhere, but never
//! on a host whose labels its rules exclude.

use std::collections::HashMap;

use doppel_api::PlacementRules;
use doppel_replication::NodeId;

/// What the planner knows about one host.
#[derive(Clone, Debug)]
pub struct HostView {
    /// Its raft id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Whether it answers probes.
    pub alive: bool,
    /// Whether an operator drained it.
    pub drained: bool,
}

/// Why `host` may not run a service with `rules` now, if it may not.
pub fn why_not(rules: &PlacementRules, host: &HostView) -> Option<String> {
    if !host.alive {
        return Some(format!("{} is down", host.name));
    }
    if let Some(mismatch) = label_mismatch(rules, host) {
        return Some(mismatch);
    }
    host.drained.then(|| format!("{} is drained", host.name))
}

/// Why `host`'s labels exclude it under `rules`, if they do (health and draining aside).
pub fn label_mismatch(rules: &PlacementRules, host: &HostView) -> Option<String> {
    rules
        .on
        .iter()
        .find_map(|(key, want)| match host.labels.get(key) {
            Some(have) if have == want => None,
            Some(have) => Some(format!("{} has {key}={have}", host.name)),
            None => Some(format!("{} has no {key} label", host.name)),
        })
}

/// A placement the rules call for.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Hosts to be active, the ones already active first.
    pub active: Vec<NodeId>,
    /// Live hosts to hand the service over from (they finish their requests first).
    pub leaving: Vec<NodeId>,
    /// Dead hosts to drop and fence at once.
    pub deposed: Vec<NodeId>,
    /// Why the rules are not met, when they are not.
    pub unmet: Option<String>,
}

/// The placement `rules` call for, from the hosts `current`ly active, among `hosts`, spreading
/// new replicas by `load` (services active per host) and preferring `prefer` (the host a deploy
/// came through).
pub fn plan(
    rules: &PlacementRules,
    current: &[NodeId],
    hosts: &[HostView],
    load: &HashMap<NodeId, usize>,
    prefer: Option<NodeId>,
) -> Plan {
    let view = |id: &NodeId| hosts.iter().find(|h| h.id == *id);
    let wanted = usize::try_from(rules.replicas.max(1)).unwrap_or(usize::MAX);
    let mut active = Vec::new();
    let mut leaving = Vec::new();
    let mut deposed = Vec::new();
    for id in current {
        match view(id) {
            // A host no longer in the cluster, or not answering: gone now.
            None => deposed.push(*id),
            Some(h) if !h.alive => deposed.push(*id),
            Some(h) if why_not(rules, h).is_none() && active.len() < wanted => active.push(*id),
            Some(_) => leaving.push(*id),
        }
    }
    let mut candidates: Vec<&HostView> = hosts
        .iter()
        .filter(|h| why_not(rules, h).is_none() && !current.contains(&h.id))
        .collect();
    candidates.sort_by_key(|h| {
        (
            Some(h.id) != prefer,
            load.get(&h.id).copied().unwrap_or(0),
            h.id,
        )
    });
    for h in candidates {
        if active.len() >= wanted {
            break;
        }
        active.push(h.id);
    }
    // Rather a drained host than none: keep a leaving one whose only fault is being drained.
    let mut i = 0;
    while active.len() < wanted && i < leaving.len() {
        let id = leaving[i];
        if view(&id).is_some_and(|h| label_mismatch(rules, h).is_none()) {
            leaving.remove(i);
            active.push(id);
        } else {
            i += 1;
        }
    }
    // A service kept on a drained host is placed, but not as its rules want.
    let fine = active
        .iter()
        .filter(|id| view(id).is_some_and(|h| why_not(rules, h).is_none()))
        .count();
    let unmet = (fine < wanted).then(|| {
        // Sorted, so the same situation always reads the same (and is not recorded twice).
        let mut reasons: Vec<String> = hosts.iter().filter_map(|h| why_not(rules, h)).collect();
        reasons.sort();
        let eligible = hosts.iter().filter(|h| why_not(rules, h).is_none()).count();
        format!(
            "it needs {rules}; {eligible} eligible host{} up ({})",
            if eligible == 1 { " is" } else { "s are" },
            if reasons.is_empty() {
                "no other hosts".to_string()
            } else {
                reasons.join("; ")
            }
        )
    });
    Plan {
        active,
        leaving,
        deposed,
        unmet,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rules(replicas: u32, on: &[(&str, &str)]) -> PlacementRules {
        PlacementRules {
            on: labels(on),
            replicas,
        }
    }

    /// A host as the tests own it; `views` lends it to the planner.
    struct Owned {
        id: NodeId,
        name: &'static str,
        labels: BTreeMap<String, String>,
        alive: bool,
        drained: bool,
    }

    struct Hosts(Vec<Owned>);

    impl Hosts {
        fn views(&self) -> Vec<HostView> {
            self.0
                .iter()
                .map(|h| HostView {
                    id: h.id,
                    name: h.name.to_string(),
                    labels: h.labels.clone(),
                    alive: h.alive,
                    drained: h.drained,
                })
                .collect()
        }
    }

    /// a (de), b (de), c (fr); `alive` and `drained` per host.
    fn three(alive: [bool; 3], drained: [bool; 3]) -> Hosts {
        let host = |i: usize, name, j| Owned {
            id: i as NodeId + 1,
            name,
            labels: labels(&[("j", j)]),
            alive: alive[i],
            drained: drained[i],
        };
        Hosts(vec![
            host(0, "a", "de"),
            host(1, "b", "de"),
            host(2, "c", "fr"),
        ])
    }

    #[test]
    fn a_dead_host_is_replaced_by_an_eligible_one_only() {
        let hosts = three([false, true, true], [false; 3]);
        let p = plan(
            &rules(1, &[("j", "de")]),
            &[1],
            &hosts.views(),
            &HashMap::new(),
            None,
        );
        assert_eq!(p.active, vec![2]);
        assert_eq!(p.deposed, vec![1]);
        assert!(p.unmet.is_none());
        // With b dead too, c (fr) is never chosen: no active host, and the reason says why.
        let hosts = three([false, false, true], [false; 3]);
        let p = plan(
            &rules(1, &[("j", "de")]),
            &[1],
            &hosts.views(),
            &HashMap::new(),
            None,
        );
        assert!(p.active.is_empty());
        let unmet = p.unmet.unwrap();
        assert!(
            unmet.contains("j=de") && unmet.contains("c has j=fr"),
            "{unmet}"
        );
    }

    #[test]
    fn replicas_fill_up_by_load_and_keep_what_is_fine() {
        let hosts = three([true; 3], [false; 3]);
        let load = HashMap::from([(1, 5), (2, 0), (3, 1)]);
        let p = plan(&rules(2, &[]), &[3], &hosts.views(), &load, None);
        assert_eq!(p.active, vec![3, 2]);
        assert!(p.leaving.is_empty() && p.deposed.is_empty());
        // A deploy through a prefers that host, whatever its load.
        let p = plan(&rules(1, &[]), &[], &hosts.views(), &load, Some(1));
        assert_eq!(p.active, vec![1]);
    }

    #[test]
    fn a_drained_host_hands_over_but_keeps_the_service_if_nothing_else_may_run_it() {
        let hosts = three([true; 3], [true, false, false]);
        let p = plan(
            &rules(1, &[("j", "de")]),
            &[1],
            &hosts.views(),
            &HashMap::new(),
            None,
        );
        assert_eq!((p.active, p.leaving), (vec![2], vec![1]));
        let hosts = three([true; 3], [true, true, false]);
        let p = plan(
            &rules(1, &[("j", "de")]),
            &[1],
            &hosts.views(),
            &HashMap::new(),
            None,
        );
        assert_eq!(p.active, vec![1]);
        assert!(p.leaving.is_empty());
        assert!(p.unmet.unwrap().contains("a is drained"));
    }

    #[test]
    fn fewer_replicas_hand_over_the_extra_hosts() {
        let hosts = three([true; 3], [false; 3]);
        let p = plan(
            &rules(1, &[]),
            &[2, 3],
            &hosts.views(),
            &HashMap::new(),
            None,
        );
        assert_eq!((p.active, p.leaving), (vec![2], vec![3]));
    }
}

//! What a restore drill found, as text, JSON and a Markdown file an operator hands to an auditor.

use std::fmt::Write as _;

use serde::Serialize;

/// One service of the restored copy, called at its probe path.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceProbe {
    /// The service name.
    pub name: String,
    /// The path called, below the service's prefix.
    pub probe: String,
    /// The last status it answered, if it answered.
    pub status: Option<u16>,
    /// From the restore's start until it first answered below 500 (ms).
    pub answered_after_ms: Option<u64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl ServiceProbe {
    /// Whether it answered without a server error.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| s < 500)
    }
}

/// Everything a drill measured and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DrillReport {
    /// The backup drilled.
    pub url: String,
    /// The point restored to, as asked (`latest`, `--at …`, `--index …`, `--before-event …`).
    pub point: String,
    /// When the drill started (RFC 3339).
    pub started: String,
    /// Whether everything passed.
    pub passed: bool,
    /// Why the drill failed, when it did.
    pub failure: Option<String>,
    /// The raft index of the old cluster the restored state stands at.
    pub index: Option<u64>,
    /// The hash the restore computed from the backup.
    pub restored_hash: Option<String>,
    /// The hash the restored host answered once it had taken the state over.
    pub host_hash: Option<String>,
    /// How many service-state keys the restored state holds.
    pub keys: Option<u64>,
    /// Restore start until every service answered (ms): the recovery time.
    pub rto_ms: Option<u64>,
    /// Restore start until the data directory was rebuilt (ms).
    pub restore_ms: Option<u64>,
    /// The age of the newest restored write when the drill started (ms): the recovery point.
    pub rpo_ms: Option<u64>,
    /// Objects read from the backup and their bytes.
    pub objects: Option<u64>,
    /// See `objects`.
    pub bytes: Option<u64>,
    /// Bytes read per second of the restore (MiB/s).
    pub throughput_mib_s: Option<f64>,
    /// Every restored service, probed.
    pub services: Vec<ServiceProbe>,
}

impl DrillReport {
    /// Marks the drill failed for `why` (the first reason is kept).
    pub fn fail(&mut self, why: String) {
        self.passed = false;
        self.failure.get_or_insert(why);
    }

    /// The Markdown file.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "# doppel restore drill: {verdict}\n");
        let _ = writeln!(out, "- Backup: `{}`", self.url);
        let _ = writeln!(out, "- Restored to: {}", self.point);
        let _ = writeln!(out, "- Drill started: {}", self.started);
        if let Some(why) = &self.failure {
            let _ = writeln!(out, "- **Failure:** {}", why.replace('\n', " "));
        }
        let _ = writeln!(out, "\n| Measure | Value |\n|---|---|");
        for (what, value) in self.figures() {
            let _ = writeln!(out, "| {what} | {value} |");
        }
        if !self.services.is_empty() {
            let _ = writeln!(
                out,
                "\n| Service | Probe | Status | Answered after | Result |\n|---|---|---|---|---|"
            );
            for s in &self.services {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} | {} | {} |",
                    s.name,
                    s.probe,
                    s.status.map_or("none".to_string(), |c| c.to_string()),
                    s.answered_after_ms.map_or("—".to_string(), ms),
                    if s.passed() {
                        "passed".to_string()
                    } else {
                        format!("FAILED: {}", s.error.as_deref().unwrap_or("server error"))
                    }
                );
            }
        }
        let _ = writeln!(
            out,
            "\nRTO: from the restore's start until every service answered. RPO: the age of the \
             newest restored write when the drill started. The state hash covers every service \
             record, module and bucket key; the restored host must answer the hash the backup \
             gives."
        );
        out
    }

    /// The text printed to the terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "passed" } else { "FAILED" };
        let _ = writeln!(out, "drill of {} ({}): {verdict}", self.url, self.point);
        if let Some(why) = &self.failure {
            let _ = writeln!(out, "  failure: {why}");
        }
        for (what, value) in self.figures() {
            let _ = writeln!(out, "  {what}: {value}");
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "  service {} {}: {}",
                s.name,
                s.probe,
                match (s.passed(), s.status, &s.error) {
                    (true, Some(code), _) => format!(
                        "{code} after {}",
                        s.answered_after_ms.map_or("?".to_string(), ms)
                    ),
                    (_, _, Some(e)) => format!("FAILED: {e}"),
                    (_, Some(code), None) => format!("FAILED: answered {code}"),
                    (_, None, None) => "FAILED: no answer".to_string(),
                }
            );
        }
        out
    }

    fn figures(&self) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        let mut row = |what, value: Option<String>| {
            if let Some(value) = value {
                rows.push((what, value));
            }
        };
        row("RTO", self.rto_ms.map(ms));
        row("RPO", self.rpo_ms.map(ms));
        row("Restore", self.restore_ms.map(ms));
        row("Index", self.index.map(|i| i.to_string()));
        row("Keys", self.keys.map(|k| k.to_string()));
        row(
            "Read",
            self.objects
                .zip(self.bytes)
                .map(|(o, b)| format!("{b} bytes in {o} object(s)")),
        );
        row(
            "Throughput",
            self.throughput_mib_s.map(|t| format!("{t:.1} MiB/s")),
        );
        row("State hash (backup)", self.restored_hash.clone());
        row("State hash (restored host)", self.host_hash.clone());
        rows
    }
}

fn ms(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

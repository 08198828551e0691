//! How commands print: JSON for `--json`, aligned tables, short digests.

/// Prints `value` as pretty JSON (what every `--json` prints).
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as columns, each as wide as its widest cell.
pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// A module digest shortened for a table: `sha256:` and its first 12 hex digits.
pub fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

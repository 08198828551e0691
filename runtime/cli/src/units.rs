//! Sizes and times as people type and read them.

/// Parses `128MiB`, `10MB`, `64k`, `1g` or a plain byte count. Units are binary (KiB = 1024)
/// whether or not the `i` is written: memory limits are always thought of that way.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size; write e.g. 128MiB, 10MB, 512KiB or 1048576")
    })?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses `30s`, `500ms`, `2m` into milliseconds.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 30s or 500ms"))
}

/// `1.5 MiB`-style rendering.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// RFC 3339 time of a Unix-epoch millisecond count.
pub fn human_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(human_size(1536), "1.5 KiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert!(parse_millis("soon").is_err());
    }
}

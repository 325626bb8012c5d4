//! Human-friendly values in config: durations ("30s", "15m") and byte sizes ("32MiB").

use std::time::Duration;

use super::raw::RawSize;

/// Parse a duration such as `"250ms"`, `"30s"` or `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (e.g. \"500ms\", \"30s\", \"5m\")"))
}

/// Parse a byte size: an integer, or a number with a unit (B, KB, KiB, MB, MiB, GB, GiB).
pub(super) fn parse_size(raw: &RawSize) -> Result<usize, String> {
    match raw {
        RawSize::Bytes(n) => usize::try_from(*n).map_err(|_| format!("size {n} is too large")),
        RawSize::Text(t) => parse_size_text(t),
    }
}

fn parse_size_text(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?} (e.g. \"32MiB\", \"512KB\", 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_text("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size_text("512 KB"), Ok(512_000));
        assert_eq!(parse_size_text("7"), Ok(7));
        assert!(parse_size_text("3 parsecs").is_err());
        assert!(parse_size_text("MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
    }
}

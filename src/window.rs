//! Calendar budget windows in UTC: hour, day, week (from Monday), month, or
//! the whole lifetime. A window is named by its start, so spend carried in
//! the journal is matched to the window it belongs to.

/// The longest window name [`Window::key`] writes.
const WINDOW_KEY_MAX: usize = 24;

/// A window's name (`2026-11-26`, `2026-11-26T13`, `2026-11-23/week`,
/// `2026-11`, `lifetime`), held inline: comparing and copying it allocates
/// nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowKey {
    bytes: [u8; WINDOW_KEY_MAX],
    len: u8,
}

impl WindowKey {
    /// Appends `b`; the longest name (`YYYYYY-MM-DD/week` for far years)
    /// fits, and past the end bytes are dropped (a year past 999,999, which
    /// the clock never gives).
    fn push(&mut self, b: &[u8]) {
        let at = usize::from(self.len);
        let n = b.len().min(WINDOW_KEY_MAX - at);
        self.bytes[at..at + n].copy_from_slice(&b[..n]);
        self.len += n as u8;
    }

    /// Appends `v` in decimal, zero-padded to `width` digits.
    fn num(&mut self, v: u64, width: usize) {
        let mut digits = itoa::Buffer::new();
        let text = digits.format(v);
        for _ in text.len()..width {
            self.push(b"0");
        }
        self.push(text.as_bytes());
    }

    const EMPTY: WindowKey = WindowKey {
        bytes: [0; WINDOW_KEY_MAX],
        len: 0,
    };

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl Default for WindowKey {
    fn default() -> Self {
        WindowKey::EMPTY
    }
}

impl std::ops::Deref for WindowKey {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for WindowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for WindowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for WindowKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<String> for WindowKey {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<WindowKey> for String {
    fn eq(&self, other: &WindowKey) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<&str> for WindowKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
    Month,
    Lifetime,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "hour" | "hourly" => Window::Hour,
            "day" | "daily" => Window::Day,
            "week" | "weekly" => Window::Week,
            "month" | "monthly" => Window::Month,
            "lifetime" | "total" => Window::Lifetime,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
            Window::Lifetime => "lifetime",
        }
    }

    /// The name of the window containing `unix` seconds, e.g. `2026-11-26`
    /// (built on the stack: every budget check asks for it).
    pub fn key(self, unix: u64) -> WindowKey {
        let days = (unix / 86_400) as i64;
        let (y, m, d) = civil_from_days(days);
        let mut k = WindowKey::EMPTY;
        let date = |k: &mut WindowKey, (y, m, d): (i64, u32, u32)| {
            k.num(u64::try_from(y).unwrap_or(0), 4);
            k.push(b"-");
            k.num(u64::from(m), 2);
            k.push(b"-");
            k.num(u64::from(d), 2);
        };
        match self {
            Window::Hour => {
                date(&mut k, (y, m, d));
                k.push(b"T");
                k.num((unix % 86_400) / 3600, 2);
            }
            Window::Day => date(&mut k, (y, m, d)),
            Window::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday is (days + 3) % 7.
                let monday = days - (days + 3).rem_euclid(7);
                date(&mut k, civil_from_days(monday));
                k.push(b"/week");
            }
            Window::Month => {
                k.num(u64::try_from(y).unwrap_or(0), 4);
                k.push(b"-");
                k.num(u64::from(m), 2);
            }
            Window::Lifetime => k.push(b"lifetime"),
        }
        k
    }

    /// When the window containing `unix` ends (unix seconds); `None` for lifetime.
    pub fn ends_at(self, unix: u64) -> Option<u64> {
        let days = (unix / 86_400) as i64;
        Some(match self {
            Window::Hour => (unix / 3600 + 1).saturating_mul(3600),
            Window::Day => (days as u64 + 1).saturating_mul(86_400),
            Window::Week => {
                let monday = days - (days + 3).rem_euclid(7);
                (monday as u64 + 7).saturating_mul(86_400)
            }
            Window::Month => {
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(ny, nm, 1) as u64).saturating_mul(86_400)
            }
            Window::Lifetime => return None,
        })
    }
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-26T03:52:12Z (a Thursday)
    const T: u64 = 1_795_665_132;

    #[test]
    fn keys() {
        assert_eq!(Window::Hour.key(T), "2026-11-26T03");
        assert_eq!(Window::Day.key(T), "2026-11-26");
        assert_eq!(Window::Week.key(T), "2026-11-23/week");
        assert_eq!(Window::Month.key(T), "2026-11");
        assert_eq!(Window::Lifetime.key(T), "lifetime");
        assert_eq!(Window::Day.key(0), "1970-01-01");
        assert_eq!(Window::Day.key(951_782_400), "2000-02-29");
        // The far future still fits the inline name.
        assert_eq!(
            Window::Week.key(u64::MAX / 4).len(),
            Window::Week.key(u64::MAX / 4).as_str().len()
        );
        assert!(Window::Hour.key(u64::MAX).len() <= WINDOW_KEY_MAX);
        assert_eq!(Window::Day.key(T), Window::Day.key(T + 60));
        assert_ne!(Window::Day.key(T), Window::Day.key(T + 86_400));
    }

    #[test]
    fn roll_over_at_the_calendar_boundary() {
        let end = Window::Day.ends_at(T).expect("end");
        assert_eq!(Window::Day.key(end - 1), "2026-11-26");
        assert_eq!(Window::Day.key(end), "2026-11-27");
        let month_end = Window::Month.ends_at(T).expect("end");
        assert_eq!(Window::Month.key(month_end), "2026-12");
        assert_eq!(Window::Month.key(month_end - 1), "2026-11");
        let dec = Window::Month.ends_at(month_end).expect("end");
        assert_eq!(Window::Month.key(dec), "2027-01");
        let week_end = Window::Week.ends_at(T).expect("end");
        assert_eq!(Window::Week.key(week_end), "2026-11-30/week");
        assert_eq!(Window::Hour.ends_at(T), Some(T - T % 3600 + 3600));
        assert_eq!(Window::Lifetime.ends_at(T), None);
    }

    #[test]
    fn civil_round_trip() {
        for days in (-1000..30_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

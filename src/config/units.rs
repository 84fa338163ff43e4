//! Human-written durations (`30m`, `1h30m`, `90s`, `500ms`) and sizes (`512m`, `2g`, `64k`).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("`{0}` is not a duration: write a number and a unit, like 90s, 30m, 1h30m or 500ms")]
    Duration(String),
    #[error("`{0}` is not a size: write a number and an optional unit, like 512m, 2g or 64k")]
    Size(String),
    #[error("`{text}` is zero: {what} must be more than that")]
    Zero { text: String, what: &'static str },
    #[error("`{text}` is too large: {what} can be at most {max}")]
    TooLarge {
        text: String,
        what: &'static str,
        max: String,
    },
    #[error("`{text}` is too small: {what} must be at least {min}")]
    TooSmall {
        text: String,
        what: &'static str,
        min: String,
    },
}

/// The longest duration any flag or spec key accepts: a case that needs more than a month is a
/// typo, and larger values overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a duration that must be more than zero and at most `max`.
pub fn parse_positive_duration(
    text: &str,
    what: &'static str,
    max: Duration,
) -> Result<Duration, UnitError> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(UnitError::Zero {
            text: text.to_string(),
            what,
        });
    }
    check_max_duration(text, d, what, max)
}

/// Fails when `d` is above `max`.
pub fn check_max_duration(
    text: &str,
    d: Duration,
    what: &'static str,
    max: Duration,
) -> Result<Duration, UnitError> {
    if d > max {
        return Err(UnitError::TooLarge {
            text: text.to_string(),
            what,
            max: show_duration(max),
        });
    }
    Ok(d)
}

/// Parses a size that must lie within `min..=max` bytes.
pub fn parse_size_within(
    text: &str,
    what: &'static str,
    min: u64,
    max: u64,
) -> Result<u64, UnitError> {
    let size = parse_size(text)?;
    if size == 0 {
        return Err(UnitError::Zero {
            text: text.to_string(),
            what,
        });
    }
    if size < min {
        return Err(UnitError::TooSmall {
            text: text.to_string(),
            what,
            min: show_size(min),
        });
    }
    if size > max {
        return Err(UnitError::TooLarge {
            text: text.to_string(),
            what,
            max: show_size(max),
        });
    }
    Ok(size)
}

/// Parses `1h30m`, `30m`, `90s`, `500ms`, `2h`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let overflow = || UnitError::TooLarge {
        text: text.to_string(),
        what: "a duration",
        max: show_duration(MAX_DURATION),
    };
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| overflow());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs_per = match unit {
            "ms" => None,
            "s" => Some(1),
            "m" | "min" => Some(60),
            "h" => Some(3600),
            "d" => Some(86400),
            _ => return Err(bad()),
        };
        let part = match secs_per {
            None => Duration::from_millis(value),
            Some(k) => Duration::from_secs(value.checked_mul(k).ok_or_else(overflow)?),
        };
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Parses a size in bytes: `2g`, `512m`, `64k`, `100` (bytes). Units are powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(text.to_string());
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let too_large = || UnitError::TooLarge {
        text: text.to_string(),
        what: "a size",
        max: "16 EiB".to_string(),
    };
    let value: u64 = number.parse().map_err(|_| too_large())?;
    value.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// The one way a duration is shown, in messages, the terminal and the summary: `950ms`,
/// `4.1s` (tenths under a minute), `3m5s`, `1h2m5s`.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    if secs < 60 {
        let tenths = d.subsec_millis() / 100;
        return match tenths {
            0 => format!("{secs}s"),
            t => format!("{secs}.{t}s"),
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `1.5 MiB`-style text for messages.
pub fn show_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("90", 90_000),
            ("90s", 90_000),
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("1m30s", 90_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "m", "10x", "1.5h", "-3s", "h1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn overflowing_durations_and_sizes_are_errors_not_saturated() {
        for huge in [
            "99999999999999999999s",
            "18446744073709551615h",
            "5124095576030432h",
            "18446744073709551615s1s",
            "99999999999999999999",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(matches!(err, UnitError::TooLarge { .. }), "{huge}: {err}");
        }
        let err = parse_size("99999999999999999999g").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(parse_size("17179869184g").is_err());
    }

    #[test]
    fn bounds_name_what_they_check() {
        let max = Duration::from_secs(60);
        let zero = parse_positive_duration("0s", "--slow-after", max).unwrap_err();
        assert!(zero.to_string().contains("--slow-after"), "{zero}");
        assert!(matches!(zero, UnitError::Zero { .. }));
        let big = parse_positive_duration("2m", "--timeout", max).unwrap_err();
        assert!(big.to_string().contains("at most 1m"), "{big}");
        assert_eq!(
            parse_positive_duration("1m", "x", max),
            Ok(Duration::from_secs(60))
        );
        assert!(parse_size_within("0", "--keep-output", 1, 10).is_err());
        let big = parse_size_within("11", "--keep-output", 1, 10).unwrap_err();
        assert!(big.to_string().contains("at most 10 B"), "{big}");
        assert_eq!(parse_size_within("10", "x", 1, 10), Ok(10));
        let small = parse_size_within("1m", "memory", 6 << 20, u64::MAX).unwrap_err();
        assert!(small.to_string().contains("at least 6.0 MiB"), "{small}");
    }

    #[test]
    fn sizes() {
        let ok = [
            ("100", 100),
            ("64k", 64 << 10),
            ("512m", 512 << 20),
            ("2g", 2 << 30),
            ("2GB", 2 << 30),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "g", "1.5g", "12q"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown() {
        assert_eq!(show_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(show_duration(Duration::from_millis(950)), "950ms");
        assert_eq!(show_duration(Duration::from_millis(4150)), "4.1s");
        assert_eq!(show_duration(Duration::from_millis(185_000)), "3m5s");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_secs(60)), "1m");
        assert_eq!(show_size(512), "512 B");
        assert_eq!(show_size(3 << 20), "3.0 MiB");
    }
}

//! Duration text: whole seconds or Go-style unit sequences such as `1h30m`.

use crate::error::{Error, Result};
use crate::redact;

/// Upper bound for any parsed duration: 100 years, far beyond any lease cap, so that
/// arithmetic on the result cannot overflow.
pub const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses `text` into whole seconds. `field` names the input in error messages.
///
/// Accepts a non-negative integer (seconds) or a sequence of decimal numbers with the units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h` and `d`, as in `1h30m` or `1.5h`. An empty string
/// is zero. The total must be a whole number of seconds.
pub fn parse_seconds(field: &str, text: &str) -> Result<u64> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(0);
    }
    if trimmed.starts_with('-') {
        return Err(Error::invalid(format!(
            "{field} must not be negative, got {}; use 0 for the default",
            quoted(text)
        )));
    }
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        return whole_seconds(field, text, digits);
    }

    let nanos = parse_units(digits).ok_or_else(|| {
        Error::invalid(format!(
            "{field} is not a valid duration: {}; use whole seconds such as \"3600\" \
             or units ns, us, ms, s, m, h, d such as \"1h30m\"",
            quoted(text)
        ))
    })?;
    if nanos % NANOS_PER_SECOND != 0 {
        return Err(Error::invalid(format!(
            "{field} must be a whole number of seconds, got {}",
            quoted(text)
        )));
    }
    let seconds = nanos / NANOS_PER_SECOND;
    if seconds > u128::from(MAX_SECONDS) {
        return Err(too_long(field, text));
    }
    Ok(seconds as u64)
}

/// Formats seconds the way Go prints durations, for messages: `1h30m0s`, `45s`.
pub fn format_seconds(seconds: u64) -> String {
    let hours = seconds / 3600;
    let minutes = seconds % 3600 / 60;
    let rest = seconds % 60;
    if hours > 0 {
        format!("{hours}h{minutes}m{rest}s")
    } else if minutes > 0 {
        format!("{minutes}m{rest}s")
    } else {
        format!("{rest}s")
    }
}

/// Quotes input for an error message, cut so that huge input is not echoed whole.
fn quoted(text: &str) -> String {
    format!("{:?}", redact::truncate(text, 64))
}

fn whole_seconds(field: &str, text: &str, digits: &str) -> Result<u64> {
    match digits.parse::<u64>() {
        Ok(seconds) if seconds <= MAX_SECONDS => Ok(seconds),
        _ => Err(too_long(field, text)),
    }
}

fn too_long(field: &str, text: &str) -> Error {
    Error::invalid(format!(
        "{field} is too long: {}; the maximum is {MAX_SECONDS} seconds (100 years)",
        quoted(text)
    ))
}

/// Sums a unit sequence in nanoseconds; `None` when the text is not a valid sequence.
fn parse_units(text: &str) -> Option<u128> {
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);

        let scale = unit_nanos(unit)?;
        total = total.checked_add(scaled(number, scale)?)?;
        rest = next;
    }
    Some(total)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    let nanos = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3600 * NANOS_PER_SECOND,
        "d" => 86_400 * NANOS_PER_SECOND,
        _ => return None,
    };
    Some(nanos)
}

/// Multiplies a decimal number such as `1.5` by `scale` without floating point.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole_value.checked_mul(scale)?;

    // Fractions finer than a nanosecond cannot change a whole-second total, so at most
    // 18 fraction digits are read.
    let mut place = scale;
    for digit in fraction.bytes().take(18) {
        place /= 10;
        value = value.checked_add(u128::from(digit - b'0') * place)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_units() {
        assert_eq!(parse_seconds("ttl", "3600").unwrap(), 3600);
        assert_eq!(parse_seconds("ttl", "+60").unwrap(), 60);
        assert_eq!(parse_seconds("ttl", "1h30m").unwrap(), 5400);
        assert_eq!(parse_seconds("ttl", "1.5h").unwrap(), 5400);
        assert_eq!(parse_seconds("ttl", "2d").unwrap(), 172_800);
        assert_eq!(parse_seconds("ttl", "1500ms500ms").unwrap(), 2);
        assert_eq!(parse_seconds("ttl", " 90s ").unwrap(), 90);
        assert_eq!(parse_seconds("ttl", "").unwrap(), 0);
        assert_eq!(parse_seconds("ttl", "0s").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_text_naming_the_field() {
        for text in [
            "-1", "-5s", "banana", "1x", "1mo", "1h-5m", ".h", "1..5h", "s", "1 h",
        ] {
            let error = parse_seconds("increment", text).unwrap_err();
            let Error::InvalidInput(message) = error else {
                panic!("{text}: not invalid input")
            };
            assert!(message.starts_with("increment "), "{text}: {message}");
        }
        assert!(matches!(
            parse_seconds("ttl", "1500ms"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            parse_seconds("ttl", "99999999999999999999"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            parse_seconds("ttl", "999999999h"),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_seconds(5400), "1h30m0s");
        assert_eq!(format_seconds(59), "59s");
        assert_eq!(format_seconds(61), "1m1s");
    }
}

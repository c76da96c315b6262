//! Durations on the command line: `500ms`, `5s`, `2m`, `1h`, `250us`.

use std::time::Duration;

/// Parses `<integer><unit>` with unit us, ms, s, m or h. A bare number is
/// refused: the unit is never guessed.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("invalid duration '{s}': add a unit (us, ms, s, m, h), e.g. 5s"))?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid duration '{s}': expected a number then a unit, e.g. 500ms"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': number out of range"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "invalid duration '{s}': unknown unit '{unit}' (use us, ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}

//! Kubernetes resource quantities ("500m", "2", "64Mi", "1G") as comparable numbers.

/// Parses a quantity into milli-units (cpu "500m" = 500, memory "1Ki" = 1_024_000).
/// Byte by byte and without allocating unless it fails: it runs for every amount of
/// every admission.
pub fn parse_milli(q: &str) -> Result<i128, String> {
    let q = q.trim_ascii();
    let invalid = || format!("{q:?} is not a valid quantity");
    let split = q.bytes().position(|b| !(b.is_ascii_digit() || b == b'.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int_part, frac_part) = number.split_at(number.bytes().position(|b| b == b'.').unwrap_or(number.len()));
    let frac_part = frac_part.strip_prefix('.').unwrap_or(frac_part);
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') || number.len() > 30 {
        return Err(invalid());
    }
    let multiplier_milli: i128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "Ki" => 1_024_000,
        "Mi" => 1_048_576_000,
        "Gi" => 1_073_741_824_000,
        "Ti" => 1_099_511_627_776_000,
        _ => return Err(format!("{q:?} has an unknown unit {suffix:?}")),
    };
    // At most 30 digits: the integer part cannot overflow an i128.
    let digits = |s: &str| s.bytes().fold(0i128, |n, b| n * 10 + i128::from(b - b'0'));
    let mut value = digits(int_part).checked_mul(multiplier_milli).ok_or_else(|| format!("{q:?} is too large"))?;
    if !frac_part.is_empty() {
        let kept = &frac_part[..frac_part.len().min(18)];
        value += digits(kept) * multiplier_milli / 10i128.pow(kept.len() as u32);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_milli("500m").unwrap(), 500);
        assert_eq!(parse_milli("2").unwrap(), 2000);
        assert_eq!(parse_milli("0.5").unwrap(), 500);
        assert_eq!(parse_milli("64Mi").unwrap(), 64 * 1_048_576_000);
        assert!(parse_milli("1Gi").unwrap() > parse_milli("1G").unwrap());
        assert!(parse_milli("abc").is_err());
        assert!(parse_milli("1X").is_err());
        assert!(parse_milli("").is_err());
        assert!(parse_milli(".").is_err());
        assert!(parse_milli("1.2.3").is_err());
        assert_eq!(parse_milli(" 1.5Gi ").unwrap(), 1_610_612_736_000);
        assert_eq!(parse_milli(".25").unwrap(), 250);
        assert_eq!(parse_milli("0.0001").unwrap(), 0);
        assert!(parse_milli("99999999999999999999999999999T").is_err());
    }
}

//! Kubernetes resource quantities ("500m", "2", "64Mi", "1G") as comparable numbers.

/// Parses a quantity into milli-units (cpu "500m" = 500, memory "1Ki" = 1_024_000).
pub fn parse_milli(q: &str) -> Result<i128, String> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 || number.len() > 30 {
        return Err(format!("{q:?} is not a valid quantity"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
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
    let int: i128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| format!("{q:?} is not a valid quantity"))? };
    let mut value = int.checked_mul(multiplier_milli).ok_or_else(|| format!("{q:?} is too large"))?;
    if !frac_part.is_empty() {
        let digits = frac_part.len().min(18) as u32;
        let frac: i128 = frac_part[..digits as usize].parse().map_err(|_| format!("{q:?} is not a valid quantity"))?;
        value += frac * multiplier_milli / 10i128.pow(digits);
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
    }
}

//! Kubernetes resource quantities ("500m", "2", "64Mi", "1e3", "100n") as exact,
//! comparable numbers. Parsing and arithmetic are `kube_quantity`'s; this module only
//! closes the two gaps it has against the API server's grammar.

use kube_quantity::ParsedQuantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid quantity (a number with an optional suffix such as m, Mi, G or e3)")]
pub struct InvalidQuantity(pub String);

/// Parses a quantity as the API server would accept it.
pub fn parse(text: &str) -> Result<ParsedQuantity, InvalidQuantity> {
    let invalid = || InvalidQuantity(text.to_string());
    // The API server's grammar starts with a sign or a digit or '.', and the number is
    // never empty; kube_quantity also reads "inf", "nan" and a bare suffix ("Mi" as 0).
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') || unsigned == "." {
        return Err(invalid());
    }
    // The exa suffixes ("1E", "1Ei") read as an incomplete exponent to kube_quantity:
    // read them as peta and scale by one more step.
    let exa = [("Ei", "Pi", 1024u32), ("E", "P", 1000u32)].into_iter().find_map(|(suffix, lower, step)| {
        let number = text.strip_suffix(suffix)?;
        number.ends_with(|c: char| c.is_ascii_digit() || c == '.').then(|| (format!("{number}{lower}"), step))
    });
    match exa {
        Some((peta, step)) => ParsedQuantity::try_from(peta.as_str()).map(|q| q * step).map_err(|_| invalid()),
        None => ParsedQuantity::try_from(text).map_err(|_| invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> ParsedQuantity {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_suffix_form_the_api_server_accepts() {
        // Decimal SI, binary SI, decimal exponents, signs and bare numbers.
        for text in [
            "100n", "250u", "500m", "1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei", "1e3", "1E3",
            "1e-3", "+1", "-1", "0.0001", ".5", "1.", "1.5Gi",
        ] {
            assert!(parse(text).is_ok(), "{text} is a valid quantity");
        }
        for text in ["", "abc", "1X", "Mi", ".", "inf", "nan", "1.2.3", " 1", "1 ", "--1", "1Kib"] {
            assert!(parse(text).is_err(), "{text:?} is not a valid quantity");
        }
    }

    #[test]
    fn compares_exactly_across_suffixes() {
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1E"), q("1000P"));
        assert_eq!(q("1Ei"), q("1024Pi"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("0.0001") > q("0"), "a tiny amount is not rounded away");
        assert!(q("100n") < q("1u"));
        assert!(q("250u") < q("1m"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
    }
}

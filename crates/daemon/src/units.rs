//! Parsing of human-friendly quantities on the command line.

use std::fmt;

/// A byte size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    input: String,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size {:?}: expected a number with an optional K, M, G or T suffix (powers of 1024), e.g. 64M",
            self.input
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses `512`, `64K`, `64M`, `1G`, `1.5G`, `64Mi`, `64MiB` into bytes (binary multiples).
///
/// ```
/// assert_eq!(kcored::units::parse_size("64M").unwrap(), 64 << 20);
/// assert_eq!(kcored::units::parse_size("1.5Gi").unwrap(), 3 << 29);
/// ```
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: input.to_string(),
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KI" | "KB" | "KIB" => 10,
        "M" | "MI" | "MB" | "MIB" => 20,
        "G" | "GI" | "GB" | "GIB" => 30,
        "T" | "TI" | "TB" | "TIB" => 40,
        _ => return Err(err()),
    };
    if number.is_empty() {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size(" 1T ").unwrap(), 1 << 40);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        for bad in ["", "M", "12Q", "-1", "1..2M", "0"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

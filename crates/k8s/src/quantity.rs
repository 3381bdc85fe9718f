//! Resource quantities (`100m`, `1.5Gi`, `2e3`), parsed and compared exactly, as
//! upstream's `resource.Quantity` (k8s.io/apimachinery/pkg/api/resource).
//!
//! A quantity is held as an integer mantissa times a power of ten, so `0.1` is exactly
//! one tenth and `1.5Gi` exactly 1610612736: no floating point anywhere. Parsing follows
//! upstream's grammar and rounding:
//!
//! ```text
//! <quantity>  ::= <sign>? <digits>? ( "." <digits>? )? <suffix>
//! <suffix>    ::= "" | n | u | m | k | M | G | T | P | E      (decimal SI, 10^-9 … 10^18)
//!              |  Ki | Mi | Gi | Ti | Pi | Ei                  (binary SI, 2^10 … 2^60)
//!              |  ( e | E ) <sign>? <digits>                   (decimal exponent, |exp| ≤ 2^31-1)
//! ```
//!
//! * a non-zero value finer than a nano-unit is rounded up (away from zero) to the next
//!   nano-unit, so asking for "some" never becomes nothing (`0.9n` is `1n`);
//! * binary-SI and decimal-exponent values beyond 2^63-1 are capped at 2^63-1, decimal-SI
//!   values are not (`12E` stays 1.2e19), as upstream;
//! * no whitespace, no empty string.
//!
//! One deliberate limit: upstream keeps arbitrary precision (`inf.Dec`); here the
//! mantissa is 128 bits, so a quantity needing more than 38 significant digits is
//! rejected instead of being parsed.

use std::cmp::Ordering;
use std::str::FromStr;

use crate::error::Error;

/// Largest magnitude of an `e`/`E` exponent (upstream keeps it in an int32 scale).
const MAX_EXPONENT: i64 = i32::MAX as i64;

/// Upstream's `maxAllowed`: the cap for binary-SI and decimal-exponent quantities.
const MAX_ALLOWED: u128 = i64::MAX as u128;

/// Most nano-units a parsed quantity resolves to (upstream rounds to `Nano`).
const NANO: i64 = -9;

/// How a quantity is written, kept from the string it was parsed from (upstream's
/// `resource.Format`): it decides the suffixes of its canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QuantityFormat {
    /// `n u m "" k M G T P E` (also plain numbers).
    #[default]
    DecimalSi,
    /// `Ki Mi Gi Ti Pi Ei`.
    BinarySi,
    /// `e<n>`.
    DecimalExponent,
}

use QuantityFormat as Format;

/// The exact value of a Kubernetes resource quantity.
///
/// Ordering, equality and hashing are by value: `1` equals `1000m`, `1Ki` equals `1024`.
/// A quantity also keeps the [`QuantityFormat`] it was written in, and prints (`Display`)
/// in upstream's canonical form for it: `1000m` as `1`, `1024Mi` as `1Gi`, `0.5` as
/// `500m`, `1500m` as `1500m`; a sum takes the format of its first non-zero term.
///
/// ```
/// use kcore_k8s::Quantity;
///
/// let cpu: Quantity = "1.5".parse()?;
/// assert_eq!(cpu.milli_value(), 1500);
/// assert_eq!("1500m".parse::<Quantity>()?, cpu);
/// assert_eq!(Quantity::parse("128Mi")?.value(), 128 << 20);
/// assert_eq!(Quantity::parse("1n")?.milli_value(), 1); // rounded up
/// assert_eq!(Quantity::parse("1024Mi")?.to_string(), "1Gi");
/// assert_eq!(Quantity::parse("0.5")?.to_string(), "500m");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    /// Value = mantissa × 10^exp, with no trailing zeros in the mantissa (zero: 0 × 10^0),
    /// so equal values have equal fields.
    mantissa: i128,
    exp: i64,
    /// How it is written; not part of its value.
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        (self.mantissa, self.exp) == (other.mantissa, other.exp)
    }
}

impl Eq for Quantity {}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.mantissa, self.exp).hash(state);
    }
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity {
        mantissa: 0,
        exp: 0,
        format: Format::DecimalSi,
    };

    /// `value` × 10^`scale` (upstream's `NewScaledQuantity`): `Quantity::new(250, -3)` is
    /// 250m.
    pub fn new(value: i64, scale: i32) -> Self {
        Self::normalized(i128::from(value), i64::from(scale))
    }

    /// Parses a quantity string with upstream's grammar and rounding (see the module
    /// documentation).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::Quantity {
            value: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let parts = split(s).ok_or_else(|| bad("not a number followed by a suffix"))?;
        let (exp2, exp10, format) = interpret(parts.suffix).ok_or_else(|| bad("unknown suffix"))?;

        // The digits of num and denom as one integer, trailing zeros moved into the exponent.
        let (num, denom) = (parts.num.as_bytes(), parts.denom.as_bytes());
        let digit = |i: usize| {
            if i < num.len() {
                num[i]
            } else {
                denom[i - num.len()]
            }
        };
        let len = num.len() + denom.len();
        let mut end = len;
        while end > 0 && digit(end - 1) == b'0' {
            end -= 1;
        }
        let too_long = || bad("more than 38 significant digits");
        let mut exp = exp10 - i64::try_from(denom.len()).map_err(|_| too_long())?
            + i64::try_from(len - end).map_err(|_| too_long())?;
        let mut mag: u128 = 0;
        for i in 0..end {
            mag = mag
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(digit(i) - b'0')))
                .ok_or_else(too_long)?;
        }
        mag = mag.checked_mul(1u128 << exp2).ok_or_else(too_long)?;
        if mag == 0 {
            return Ok(Self::ZERO.with_format(format));
        }
        // Round up to a whole number of nano-units.
        if exp < NANO {
            mag = match pow10(NANO - exp) {
                Some(p) => mag.div_ceil(p),
                None => 1,
            };
            exp = NANO;
        }
        if format != Format::DecimalSi && exceeds(mag, exp, MAX_ALLOWED) {
            mag = MAX_ALLOWED;
            exp = 0;
        }
        let m = i128::try_from(mag).map_err(|_| too_long())?;
        Ok(Self::normalized(if parts.negative { -m } else { m }, exp).with_format(format))
    }

    /// The format it was written in (decimal SI for [`Quantity::new`] and sums that
    /// start from one).
    pub fn format(&self) -> QuantityFormat {
        self.format
    }

    /// The same value, to be written in `format`.
    pub fn with_format(mut self, format: QuantityFormat) -> Self {
        self.format = format;
        self
    }

    /// The value in units of 10^`scale`, rounded up (away from zero) like upstream's
    /// `ScaledValue`, and saturating at the `i64` range where upstream's wraps.
    pub fn scaled_value(&self, scale: i32) -> i64 {
        if self.mantissa == 0 {
            return 0;
        }
        let mag = self.mantissa.unsigned_abs();
        let e = self.exp - i64::from(scale);
        let v = if e >= 0 {
            pow10(e)
                .and_then(|p| mag.checked_mul(p))
                .unwrap_or(u128::MAX)
        } else {
            pow10(-e).map_or(1, |p| mag.div_ceil(p))
        };
        let v = i64::try_from(v).unwrap_or(i64::MAX);
        if self.mantissa < 0 {
            -v
        } else {
            v
        }
    }

    /// The value in base units (bytes, cores, counts), rounded up: upstream's `Value`.
    pub fn value(&self) -> i64 {
        self.scaled_value(0)
    }

    /// The value in thousandths (millicores), rounded up: upstream's `MilliValue`.
    pub fn milli_value(&self) -> i64 {
        self.scaled_value(-3)
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// `self + other`, or `None` when the exact sum does not fit. The sum keeps
    /// `self`'s format, or `other`'s when `self` is zero (upstream's `Add`).
    pub fn checked_add(self, other: Self) -> Option<Self> {
        if self.mantissa == 0 {
            return Some(other);
        }
        if other.mantissa == 0 {
            return Some(self);
        }
        let exp = self.exp.min(other.exp);
        let a = self.mantissa.checked_mul(pow10_signed(self.exp - exp)?)?;
        let b = other.mantissa.checked_mul(pow10_signed(other.exp - exp)?)?;
        let sum = a.checked_add(b).filter(|s| *s != i128::MIN)?;
        Some(Self::normalized(sum, exp).with_format(self.format))
    }

    /// `self - other`, or `None` when the exact difference does not fit.
    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.checked_add(-other)
    }

    fn normalized(mut mantissa: i128, mut exp: i64) -> Self {
        if mantissa == 0 {
            return Self::ZERO;
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exp += 1;
        }
        Self {
            mantissa,
            exp,
            format: Format::DecimalSi,
        }
    }

    /// Upstream's `CanonicalizeBytes`: the digits and the suffix of the canonical form.
    fn canonical(&self) -> (i128, String) {
        if self.mantissa == 0 {
            return (0, String::new());
        }
        let mut format = self.format;
        if format == Format::BinarySi {
            // Small or fractional values are shown in decimal, never rounded.
            let small = self.exp <= 0
                && self.mantissa.unsigned_abs()
                    < pow10(-self.exp)
                        .and_then(|p| p.checked_mul(1024))
                        .unwrap_or(u128::MAX);
            let whole = pow10_signed(self.exp).and_then(|p| self.mantissa.checked_mul(p));
            match whole {
                Some(mut v) if !small => {
                    let mut times = 0;
                    while v % 1024 == 0 && times < 6 {
                        v /= 1024;
                        times += 1;
                    }
                    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][times];
                    return (v, suffix.to_owned());
                }
                _ => format = Format::DecimalSi,
            }
        }
        // Decimal: the exponent brought down to a multiple of three.
        let (mut m, mut e) = (self.mantissa, self.exp);
        let r = e.rem_euclid(3);
        m *= pow10_signed(r).unwrap_or(1);
        e -= r;
        if format == Format::DecimalExponent {
            return (
                m,
                if e == 0 {
                    String::new()
                } else {
                    format!("e{e}")
                },
            );
        }
        // Past exa, the extra thousands stay in the digits.
        while e > 18 {
            match m.checked_mul(1000) {
                Some(x) => m = x,
                None => return (m, format!("e{e}")),
            }
            e -= 3;
        }
        let suffix = match e {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => "",
        };
        (m, suffix.to_owned())
    }
}

impl std::fmt::Display for Quantity {
    /// Upstream's canonical form (`Quantity.String()`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (digits, suffix) = self.canonical();
        write!(f, "{digits}{suffix}")
    }
}

impl std::ops::Neg for Quantity {
    type Output = Quantity;

    fn neg(self) -> Quantity {
        // The mantissa is never i128::MIN (parse and checked_add keep it out).
        Quantity {
            mantissa: -self.mantissa,
            exp: self.exp,
            format: self.format,
        }
    }
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl TryFrom<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> for Quantity {
    type Error = Error;

    fn try_from(
        q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    ) -> Result<Self, Error> {
        Self::parse(&q.0)
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.mantissa.signum(), other.mantissa.signum());
        if a != b || a == 0 {
            return a.cmp(&b);
        }
        let mag = cmp_magnitude(self, other);
        if a > 0 {
            mag
        } else {
            mag.reverse()
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn cmp_magnitude(a: &Quantity, b: &Quantity) -> Ordering {
    if a.exp < b.exp {
        return cmp_magnitude(b, a).reverse();
    }
    let (ma, mb) = (a.mantissa.unsigned_abs(), b.mantissa.unsigned_abs());
    // a has the larger exponent: scale it down to b's; if that overflows, a is larger.
    match pow10(a.exp - b.exp).and_then(|p| ma.checked_mul(p)) {
        Some(x) => x.cmp(&mb),
        None => Ordering::Greater,
    }
}

/// 10^n for 0 ≤ n, if it fits in a u128.
fn pow10(n: i64) -> Option<u128> {
    10u128.checked_pow(u32::try_from(n).ok()?)
}

fn pow10_signed(n: i64) -> Option<i128> {
    10i128.checked_pow(u32::try_from(n).ok()?)
}

/// Whether mag × 10^exp > limit (exp ≥ -9).
fn exceeds(mag: u128, exp: i64, limit: u128) -> bool {
    if exp >= 0 {
        pow10(exp)
            .and_then(|p| mag.checked_mul(p))
            .is_none_or(|v| v > limit)
    } else {
        pow10(-exp)
            .and_then(|p| limit.checked_mul(p))
            .is_some_and(|l| mag > l)
    }
}

struct Parts<'a> {
    negative: bool,
    /// Integer digits without leading zeros (empty for zero).
    num: &'a str,
    /// Fraction digits.
    denom: &'a str,
    suffix: &'a str,
}

/// Upstream's `parseQuantityString`: sign, digits, fraction, then a suffix made of suffix
/// letters, an optional sign and digits, and nothing after it.
fn split(s: &str) -> Option<Parts<'_>> {
    let b = s.as_bytes();
    let mut pos = 0;
    let negative = match b.first() {
        Some(b'-') => {
            pos = 1;
            true
        }
        Some(b'+') => {
            pos = 1;
            false
        }
        _ => false,
    };
    let digits = |mut pos: usize| {
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        pos
    };
    while pos < b.len() && b[pos] == b'0' {
        pos += 1;
    }
    let start = pos;
    pos = digits(pos);
    let num = &s[start..pos];
    let mut denom = "";
    if pos < b.len() && b[pos] == b'.' {
        let from = pos + 1;
        pos = digits(from);
        denom = &s[from..pos];
    }
    let suffix_start = pos;
    while pos < b.len() && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < b.len() && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    pos = digits(pos);
    (pos == b.len()).then(|| Parts {
        negative,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// A suffix as (power of two, power of ten, format).
fn interpret(suffix: &str) -> Option<(u32, i64, Format)> {
    use Format::{BinarySi, DecimalSi};
    Some(match suffix {
        "" => (0, 0, DecimalSi),
        "n" => (0, -9, DecimalSi),
        "u" => (0, -6, DecimalSi),
        "m" => (0, -3, DecimalSi),
        "k" => (0, 3, DecimalSi),
        "M" => (0, 6, DecimalSi),
        "G" => (0, 9, DecimalSi),
        "T" => (0, 12, DecimalSi),
        "P" => (0, 15, DecimalSi),
        "E" => (0, 18, DecimalSi),
        "Ki" => (10, 0, BinarySi),
        "Mi" => (20, 0, BinarySi),
        "Gi" => (30, 0, BinarySi),
        "Ti" => (40, 0, BinarySi),
        "Pi" => (50, 0, BinarySi),
        "Ei" => (60, 0, BinarySi),
        s if s.len() > 1 && s.starts_with(['e', 'E']) => {
            let e: i64 = s[1..].parse().ok()?;
            if e.abs() > MAX_EXPONENT {
                return None;
            }
            (0, e, Format::DecimalExponent)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Upstream's canonical strings (quantity_test.go's TestQuantityString and
    /// TestQuantityParseEmit cases): input, then what `String()` gives.
    #[test]
    fn prints_canonically_as_upstream() {
        for (input, want) in [
            ("0", "0"),
            ("0Mi", "0"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1", "1"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("2000000", "2M"),
            ("100m", "100m"),
            ("12345n", "12345n"),
            ("1000000n", "1m"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1000Mi", "1000Mi"),
            ("1024", "1024"),
            ("1024Ki", "1Mi"),
            ("512", "512"),
            ("0.5Ki", "512"),
            ("1023Ki", "1023Ki"),
            ("1.5Gi", "1536Mi"),
            ("0.1Ki", "102400m"),
            ("1e3", "1e3"),
            ("1e6", "1e6"),
            ("1.5e3", "1500"),
            ("100e-3", "100e-3"),
            ("-1", "-1"),
            ("-1500m", "-1500m"),
            ("-2Gi", "-2Gi"),
            ("10E", "10E"),
            ("1000E", "1000E"),
            ("5n", "5n"),
            ("1u", "1u"),
        ] {
            assert_eq!(q(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn sums_keep_the_first_terms_format() {
        let sum = |a: &str, b: &str| q(a).checked_add(q(b)).unwrap().to_string();
        assert_eq!(sum("512Mi", "512Mi"), "1Gi");
        assert_eq!(sum("500M", "500M"), "1G");
        assert_eq!(sum("0", "64Mi"), "64Mi");
        assert_eq!(sum("1Gi", "1G"), "2073741824");
        assert_eq!(sum("1G", "1Gi"), "2073741824");
        assert_eq!(sum("250m", "750m"), "1");
        assert_eq!(
            Quantity::ZERO.checked_add(q("1Ki")).unwrap().format(),
            QuantityFormat::BinarySi
        );
        assert_eq!(q("1Ki"), q("1024"));
    }

    /// Upstream's TestQuantityParse table (quantity_test.go): input and its exact value
    /// as mantissa × 10^exp.
    #[test]
    fn parses_upstream_table() {
        let max = i64::MAX;
        let table: &[(&str, i64, i32)] = &[
            ("0", 0, 0),
            ("0n", 0, 0),
            ("0u", 0, 0),
            ("0m", 0, 0),
            ("0Ki", 0, 0),
            ("0k", 0, 0),
            ("0Mi", 0, 0),
            ("0M", 0, 0),
            ("0Gi", 0, 0),
            ("0G", 0, 0),
            ("0Ti", 0, 0),
            ("0T", 0, 0),
            ("1", 1, 0),
            // binary suffixes
            ("1Ki", 1024, 0),
            ("8Ki", 8 * 1024, 0),
            ("7Mi", 7 << 20, 0),
            ("6Gi", 6 << 30, 0),
            ("5Ti", 5 << 40, 0),
            ("4Pi", 4 << 50, 0),
            ("3Ei", 3 << 60, 0),
            ("10Ti", 10 << 40, 0),
            ("100Ti", 100 << 40, 0),
            // decimal suffixes
            ("5n", 5, -9),
            ("4u", 4, -6),
            ("3m", 3, -3),
            ("9", 9, 0),
            ("8k", 8, 3),
            ("50k", 5, 4),
            ("7M", 7, 6),
            ("6G", 6, 9),
            ("5T", 5, 12),
            ("40T", 4, 13),
            ("300T", 3, 14),
            ("2P", 2, 15),
            ("1E", 1, 18),
            // decimal exponents
            ("1E-3", 1, -3),
            ("1e3", 1, 3),
            ("1E6", 1, 6),
            ("1e9", 1, 9),
            ("1E12", 1, 12),
            ("1e15", 1, 15),
            ("1E18", 1, 18),
            ("1e14", 1, 14),
            ("1e13", 1, 13),
            ("100.035k", 100035, 0),
            // things that look like floating point
            ("0.001", 1, -3),
            ("0.0005k", 5, -1),
            ("0.005", 5, -3),
            ("0.05", 5, -2),
            ("0.5", 5, -1),
            ("0.00050k", 5, -1),
            ("0.00500", 5, -3),
            ("0.05000", 5, -2),
            ("0.50000", 5, -1),
            ("0.5e0", 5, -1),
            ("0.5e-1", 5, -2),
            ("0.5e-2", 5, -3),
            ("10.035M", 10035, 3),
            ("1.2e3", 12, 2),
            ("1.3E+6", 13, 5),
            ("1.40e9", 14, 8),
            ("1.53E12", 153, 10),
            ("1.6e15", 16, 14),
            ("1.7E18", 17, 17),
            ("9.01", 901, -2),
            ("8.1k", 81, 2),
            ("7.123456M", 7123456, 0),
            ("6.987654321G", 6987654321, 0),
            ("5.444T", 5444, 9),
            ("40.1T", 401, 11),
            ("300.2T", 3002, 11),
            ("2.5P", 25, 14),
            ("1.01E", 101, 16),
            // things that saturate or round
            ("3.001n", 4, -9),
            ("1.1E-9", 2, -9),
            ("0.0000000001", 1, -9),
            ("0.0000000005", 1, -9),
            ("0.00000000050", 1, -9),
            ("0.5e-9", 1, -9),
            ("0.9n", 1, -9),
            ("0.00000012345", 124, -9),
            ("0.00000012354", 124, -9),
            ("9Ei", max, 0),
            ("9223372036854775807Ki", max, 0),
            ("12E", 12, 18),
            // fractional binary
            ("100.035Ki", 10243584, -2),
            ("0.5Mi", 512 * 1024, 0),
            ("0.05Gi", 536870912, -1),
            ("0.025Ti", 274877906944, -1),
            // things written by trolls
            ("0.000000000001Ki", 2, -9),
            (".001", 1, -3),
            (".0001k", 100, -3),
            ("1.", 1, 0),
            ("1.G", 1, 9),
            (".", 0, 0),
        ];
        for &(input, mantissa, exp) in table {
            let want = Quantity::new(mantissa, exp);
            assert_eq!(q(input), want, "{input}");
            // the negative and the explicitly positive version of everything
            assert_eq!(q(&format!("-{input}")), -want, "-{input}");
            assert_eq!(q(&format!("+{input}")), want, "+{input}");
        }
        // upstream's parseQuantityString table: a lone sign or point is zero
        for zero in ["-.", "+", "-", "000", "-0.0"] {
            assert_eq!(q(zero), Quantity::ZERO, "{zero}");
        }
    }

    #[test]
    fn rejects_upstream_invalid_table() {
        for bad in [
            "",
            "1.1.M",
            "1+1.0M",
            "0.1mi",
            "0.1am",
            "aoeu",
            ".5i",
            "1i",
            "-3.01i",
            "-3.01e-",
            "1e4294967297",
            "1E2147483648",
            "1E-2147483648",
            " 1",
            "1 ",
            "1e",
            "1K",
            "12Xi",
            "1.2.3",
            "٣",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        // the exponent bounds upstream accepts
        assert!(Quantity::parse("1E2147483647").is_ok());
        assert!(Quantity::parse("1E-2147483647").is_ok());
        assert_eq!(q("1E2147483647").value(), i64::MAX); // capped
        assert_eq!(q("1E-2147483647"), Quantity::new(1, -9)); // rounded up to 1n
    }

    #[test]
    fn compares_like_upstream() {
        // TestQuantityCmp
        for (x, y, want) in [
            ("0", "0", Ordering::Equal),
            ("100m", "50m", Ordering::Greater),
            ("50m", "100m", Ordering::Less),
            ("10000T", "100Gi", Ordering::Greater),
            ("1", "1000m", Ordering::Equal),
            ("1Ki", "1024", Ordering::Equal),
            ("1k", "1Ki", Ordering::Less),
            ("-1", "1n", Ordering::Less),
            ("-1", "-2", Ordering::Greater),
            ("1000E", "9Ei", Ordering::Greater),
        ] {
            assert_eq!(q(x).cmp(&q(y)), want, "{x} vs {y}");
            assert_eq!(q(y).cmp(&q(x)), want.reverse(), "{y} vs {x}");
        }
    }

    #[test]
    fn milli_and_base_values_round_up() {
        let cases: &[(&str, i64, i64)] = &[
            // (input, value, milli_value)
            ("100m", 1, 100),
            ("1", 1, 1000),
            ("1.5", 2, 1500),
            ("0.1", 1, 100),
            ("2k", 2000, 2_000_000),
            ("1Ki", 1024, 1_024_000),
            ("500Mi", 500 << 20, (500 << 20) * 1000),
            ("1e3", 1000, 1_000_000),
            ("1n", 1, 1),
            ("250u", 1, 1),
            ("0", 0, 0),
            ("32Gi", 32 << 30, (32 << 30) * 1000),
            ("1.5k", 1500, 1_500_000),
            ("123456789123456789", 123456789123456789, i64::MAX),
            ("-1.5", -2, -1500),
            ("-1n", -1, -1),
            ("12E", i64::MAX, i64::MAX),
        ];
        for &(input, value, milli) in cases {
            assert_eq!(q(input).value(), value, "value of {input}");
            assert_eq!(q(input).milli_value(), milli, "milli value of {input}");
        }
        // upstream's TestQuantityRoundUp, read through ScaledValue
        assert_eq!(q("9.01").scaled_value(-2), 901);
        assert_eq!(q("9.01").scaled_value(-1), 91);
        assert_eq!(q("9.01").scaled_value(0), 10);
        assert_eq!(q("9.01").scaled_value(2), 1);
        assert_eq!(q("-9.01").scaled_value(-1), -91);
        assert_eq!(q("-9.01").scaled_value(0), -10);
    }

    #[test]
    fn adds_and_subtracts_exactly() {
        let sum = q("100m").checked_add(q("1.9")).unwrap();
        assert_eq!(sum, q("2"));
        assert_eq!(q("1Gi").checked_sub(q("1Gi")).unwrap(), Quantity::ZERO);
        assert_eq!(
            q("0.1").checked_add(q("0.2")).unwrap(),
            q("0.3"),
            "no floating point"
        );
        assert_eq!(
            q("1n").checked_add(q("1E")).unwrap(),
            q("1000000000000000000000000001n")
        );
        assert_eq!(q("5").checked_sub(q("7")).unwrap(), q("-2"));
        let huge = q("100000000000000000000E"); // 1e38, decimal SI is not capped
        assert!(huge.checked_add(q("1n")).is_none(), "overflow is reported");
        assert!(Quantity::ZERO.is_zero());
        assert_eq!(Quantity::new(250, -3), q("250m"));
    }

    #[test]
    fn rejects_what_needs_more_than_128_bits() {
        assert!(Quantity::parse("123456789012345678901234567890123456789012").is_err());
        // trailing zeros do not count as significant digits
        assert_eq!(
            q("100000000000000000000000000000000000000000000000000"),
            Quantity::new(1, 50)
        );
    }
}

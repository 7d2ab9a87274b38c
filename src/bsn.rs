//! The burgerservicenummer (BSN) as a type that can only hold a valid number.
//!
//! Parse, don't validate: [`Bsn::parse`] applies the 11-proef once, at the edge, and the rest of
//! the gateway passes a `Bsn` around. The `Debug` output is masked so a BSN never lands in a log
//! line by accident; `as_str` is the deliberate way to get the digits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A valid BSN: nine digits that pass the 11-proef and are not all zero.
/// The fictitious test persons the demo fixtures cover (all pass the 11-proef; none is a
/// real citizen): the default `partner_test_bsns`, and the BSNs tests walk through.
pub const TEST_BSNS: [&str; 6] = [
    "999993653",
    "999990019",
    "999991772",
    "999992958",
    "999993847",
    "999990421",
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bsn([u8; 9]);

/// Why a string is not a BSN. The message never repeats the input (it is personal data).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BsnError {
    #[error("a BSN has 8 or 9 digits")]
    Length,
    #[error("a BSN holds digits only")]
    NotDigits,
    #[error("the BSN fails the 11-proef")]
    Checksum,
}

impl Bsn {
    /// Parses and checks a BSN. An 8-digit number gets a leading zero, as the BRP does.
    pub fn parse(input: &str) -> Result<Bsn, BsnError> {
        let s = input.trim();
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BsnError::NotDigits);
        }
        let mut digits = [b'0'; 9];
        match s.len() {
            9 => digits.copy_from_slice(s.as_bytes()),
            8 => digits[1..].copy_from_slice(s.as_bytes()),
            _ => return Err(BsnError::Length),
        }
        let mut sum: i64 = 0;
        for (i, d) in digits.iter().enumerate() {
            let v = i64::from(d - b'0');
            sum += if i == 8 { -v } else { (9 - i as i64) * v };
        }
        if sum == 0 || sum % 11 != 0 {
            return Err(BsnError::Checksum);
        }
        Ok(Bsn(digits))
    }

    /// The nine digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("000000000")
    }

    /// A masked form for logs and messages: `*****3653`.
    pub fn masked(&self) -> String {
        format!("*****{}", &self.as_str()[5..])
    }
}

impl fmt::Debug for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bsn({})", self.masked())
    }
}

impl fmt::Display for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Bsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Bsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Bsn::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_test_numbers_pass() {
        for n in TEST_BSNS {
            assert!(Bsn::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(Bsn::parse("999993654"), Err(BsnError::Checksum));
        assert_eq!(Bsn::parse("000000000"), Err(BsnError::Checksum));
        assert_eq!(Bsn::parse("12345"), Err(BsnError::Length));
        assert_eq!(Bsn::parse("99999365a"), Err(BsnError::NotDigits));
        assert_eq!(Bsn::parse("9999936530"), Err(BsnError::Length));
    }

    #[test]
    fn eight_digits_get_a_leading_zero() {
        // 012345672: 0*9+1*8+2*7+3*6+4*5+5*4+6*3+7*2-2 = 132 = 12*11
        let b = Bsn::parse("12345672").unwrap();
        assert_eq!(b.as_str(), "012345672");
    }

    #[test]
    fn debug_is_masked() {
        let b = Bsn::parse("999993653").unwrap();
        assert_eq!(format!("{b:?}"), "Bsn(*****3653)");
    }
}

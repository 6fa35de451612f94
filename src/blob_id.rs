//! Blob ids, compatible with Apache James `GenerationAwareBlobId`.
//!
//! Text form `{family}_{generation}_{delegate}`; family 0 prints as the bare delegate. The
//! delegate of a deduplicated blob is the base64url SHA-256 of its content and may itself
//! contain `_`, so parsing splits on the first two `_` only. The README and the tests below hold every case.

use std::fmt;

/// A parsed blob id. Borrows the delegate from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobId<'a> {
    pub family: u32,
    pub generation: u64,
    pub delegate: &'a str,
}

/// Why a text is not a blob id. Such an id is never deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedId {
    #[error("empty blob id")]
    Empty,
    #[error("blob id contains '/': keys below the store prefix must be flat")]
    Nested,
    /// An object store cannot address it: `.`, `..`, or a control character (object_store
    /// refuses such a key, so a batch holding it could never be deleted).
    #[error("blob id is not an addressable object key ('.', '..' or a control character)")]
    Unaddressable,
    #[error("family or generation of {0:?} is not a non-negative decimal integer")]
    BadNumber(String),
}

const URL_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// The last base64 character of a 32-byte digest carries 2 bits followed by 4 zero bits.
const DIGEST_LAST_CHARS: &[u8] = b"AEIMQUYcgkosw048";

/// A bare base64url SHA-256 digest (43 characters + `=`): a legacy family-0 id even when its
/// `_` would make James's parser see a family and a generation.
pub fn is_legacy_digest(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 44
        && b[43] == b'='
        && DIGEST_LAST_CHARS.contains(&b[42])
        && b[..42].iter().all(|c| URL_ALPHABET.contains(c))
}

impl<'a> BlobId<'a> {
    /// Parses a blob id as James does, plus the legacy digest rule: a bare base64url SHA-256 digest is family 0.
    pub fn parse(text: &'a str) -> Result<BlobId<'a>, MalformedId> {
        let legacy = BlobId {
            family: 0,
            generation: 0,
            delegate: text,
        };
        if text.is_empty() {
            return Err(MalformedId::Empty);
        }
        // One pass without an early exit, so that it vectorises: this runs for every listed id.
        let (slash, control) = text.bytes().fold((false, false), |(s, c), b| {
            (s | (b == b'/'), c | (b < 0x20) | (b == 0x7f))
        });
        if slash {
            return Err(MalformedId::Nested);
        }
        if control || text == "." || text == ".." {
            return Err(MalformedId::Unaddressable);
        }
        if is_legacy_digest(text) {
            return Ok(legacy);
        }
        // Plain loops, not `find`: the fields are a few bytes long, shorter than a vectorised
        // search takes to start (this runs for every listed id).
        let b = text.as_bytes();
        let Some(first) = b
            .iter()
            .position(|&c| c == b'_')
            .filter(|&i| i + 1 < b.len())
        else {
            return Ok(legacy);
        };
        let Some(second) = b[first + 1..]
            .iter()
            .position(|&c| c == b'_')
            .map(|i| first + 1 + i)
            .filter(|&i| i + 1 < b.len())
        else {
            return Ok(legacy);
        };
        let family = parse_decimal(&b[..first]).and_then(|f| u32::try_from(f).ok());
        let generation = parse_decimal(&b[first + 1..second]);
        match (family, generation) {
            (Some(family), Some(generation))
                if family <= i32::MAX as u32 && generation <= i64::MAX as u64 =>
            {
                Ok(BlobId {
                    family,
                    generation,
                    delegate: &text[second + 1..],
                })
            }
            _ => Err(MalformedId::BadNumber(text.to_string())),
        }
    }
}

/// Digits only: James's `parseInt` would also take a sign, which no id it writes carries.
/// None when empty or beyond u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(c - b'0')))
            .flatten()
    })
}

impl fmt::Display for BlobId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.family == 0 {
            f.write_str(self.delegate)
        } else {
            write!(f, "{}_{}_{}", self.family, self.generation, self.delegate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (u32, u64, &str) {
        let id = BlobId::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        (id.family, id.generation, id.delegate)
    }

    #[test]
    fn contract_family_zero_cases() {
        for s in ["abc", "abc_", "1_abc", "1_2", "1_2_", "_abc"] {
            assert_eq!(parsed(s), (0, 0, s), "{s}");
        }
    }

    #[test]
    fn contract_malformed_cases() {
        for s in [
            "",
            "invalid_2_abc",
            "1__abc",
            "-1_2_abc",
            "+1_2_abc",
            "a/b",
            "99999999999_2_x",
            ".",
            "..",
            "1_2_a\u{7}b",
            "tab\there",
        ] {
            assert!(BlobId::parse(s).is_err(), "{s:?} should be malformed");
        }
    }

    #[test]
    fn generation_aware_ids() {
        assert_eq!(parsed("0_0_abc"), (0, 0, "abc"));
        assert_eq!(parsed("1_628_x"), (1, 628, "x"));
        assert_eq!(parsed("2_5_a_b_c"), (2, 5, "a_b_c"));
    }

    #[test]
    fn format_round_trips_and_family_zero_is_bare() {
        assert_eq!(BlobId::parse("0_0_abc").unwrap().to_string(), "abc");
        assert_eq!(BlobId::parse("1_628_x_y").unwrap().to_string(), "1_628_x_y");
    }

    proptest::proptest! {
        #[test]
        fn numbers_parse_as_the_standard_library_parses_digits(s in "[0-9]{0,25}|[0-9a+-]{0,4}") {
            let expected = (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten();
            proptest::prop_assert_eq!(parse_decimal(s.as_bytes()), expected);
        }
    }

    #[test]
    fn legacy_digest_with_underscores_is_family_zero() {
        // James would read family "ab", generation "cd" and fail; the digest rule keeps it legacy.
        let digest = "ab_cd_efghijklmnopqrstuvwxyz0123456789ABCDE=";
        assert_eq!(digest.len(), 44);
        assert_eq!(parsed(digest), (0, 0, digest));
        let numeric = "12_34_efghijklmnopqrstuvwxyz0123456789ABCDE=";
        assert_eq!(parsed(numeric), (0, 0, numeric));
        // One character short is not a digest: the James rules apply.
        assert!(BlobId::parse("ab_cd_efghijklmnopqrstuvwxyz0123456789ABCD=").is_err());
    }
}

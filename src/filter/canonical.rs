//! Spellings of one blob id: `1_0557_x` and `1_557_x` (leading zeros), `0_0_x` and `x` (the
//! legacy family) name one blob. The filter, the fingerprint and every exact comparison work on
//! the spelling all of them end at, so no spelling of a referenced id can look unreferenced.

use crate::blob_id::BlobId;

/// The spelling every spelling of `id` ends at: [`non_canonical`] applied until nothing changes.
/// One step is not enough for exact matching: `0_0_0_7_y` names the key `0_7_y` (family 0, whose
/// delegate is `0_7_y`), and that key's own canonical form is `y`; a listed `0_7_y` and that
/// reference meet only at the end of the chain. Each step removes characters, so it ends. Two
/// ids sharing a spelling share this one, so a join on it misses no match the filter makes.
#[inline]
pub(crate) fn fully_canonical(id: &str) -> std::borrow::Cow<'_, str> {
    // The path of nearly every id, inlined into the filter's insert and lookup.
    if !may_be_non_canonical(id) {
        return std::borrow::Cow::Borrowed(id);
    }
    let mut current = std::borrow::Cow::Borrowed(id);
    while let Some(next) = non_canonical(&current) {
        current = std::borrow::Cow::Owned(next);
    }
    current
}

/// The canonical spelling of `id` when it differs from `id`. Canonical text is `id` with
/// characters removed (a `0_0_` prefix, leading zeros), so equal lengths mean equal texts and
/// the common case costs no allocation.
pub(crate) fn non_canonical(id: &str) -> Option<String> {
    if !may_be_non_canonical(id) {
        return None;
    }
    let parsed = BlobId::parse(id).ok()?;
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let canonical_len = if parsed.family == 0 {
        parsed.delegate.len()
    } else {
        digits(u64::from(parsed.family)) + digits(parsed.generation) + 2 + parsed.delegate.len()
    };
    (canonical_len != id.len()).then(|| parsed.to_string())
}

/// Whether `id` may have another spelling: only a family or generation field starting with
/// `0` (a `0_` family-0 prefix, or a leading zero) makes one. Most ids skip the full parse;
/// this runs for every id inserted or probed.
#[inline]
fn may_be_non_canonical(id: &str) -> bool {
    let b = id.as_bytes();
    let mut start = 0;
    for _ in 0..2 {
        let Some(len) = b[start..].iter().position(|&c| c == b'_') else {
            return false;
        };
        if b[start] == b'0' {
            return true;
        }
        start += len + 1;
    }
    false
}

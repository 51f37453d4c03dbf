//! A small per-thread cache of short strings, so that the values a stream repeats (an event
//! type, a channel, a country) share one allocation instead of taking one per record.
//!
//! Allocating a short string costs little; freeing it on another thread — the operator thread
//! drops what the source thread decoded — costs the allocator far more. The cache is direct
//! mapped: a miss replaces the slot, so high-cardinality strings only cost a hash and a compare.

use std::cell::RefCell;
use std::sync::Arc;

/// Strings longer than this are not cached (ids, urls): they rarely repeat.
const MAX_LEN: usize = 24;
const SLOTS: usize = 512;

thread_local! {
    static CACHE: RefCell<Vec<Option<Arc<str>>>> = RefCell::new(vec![None; SLOTS]);
}

/// `text` as a shared string, from this thread's cache when it was seen recently.
pub(crate) fn intern(text: &str) -> Arc<str> {
    if text.len() > MAX_LEN {
        return Arc::from(text);
    }
    // FNV-1a: short input, no setup, good enough spread for a direct-mapped cache.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let slot = hash as usize % SLOTS;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &cache[slot] {
            Some(cached) if &**cached == text => cached.clone(),
            _ => {
                let fresh: Arc<str> = Arc::from(text);
                cache[slot] = Some(fresh.clone());
                fresh
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_short_strings_share_one_allocation() {
        let a = intern("web");
        let b = intern("web");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*intern("mobile"), "mobile");
        let long = "x".repeat(MAX_LEN + 1);
        assert!(!Arc::ptr_eq(&intern(&long), &intern(&long)));
    }
}

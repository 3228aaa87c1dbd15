//! Hash tables keyed by kernel addresses and socket cookies, and keeping them small.

use std::hash::{BuildHasher, Hash};

/// A hash map with a fast hasher (foldhash, hashbrown's own default). Its keys are kernel
/// addresses and cookies, not input an outsider chooses, so the standard library's
/// DoS-resistant SipHash buys nothing here; with it, hashing was a good part of decoding a
/// record.
pub type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// A table less than a quarter full (and not small): worth shrinking.
pub fn mostly_empty(capacity: usize, len: usize) -> bool {
    capacity > 4 * len + 1024
}

/// Shrinks a hash table that is [`mostly_empty`].
pub fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut std::collections::HashMap<K, V, S>) {
    if mostly_empty(map.capacity(), map.len()) {
        map.shrink_to_fit();
    }
}

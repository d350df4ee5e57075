//! Per-key state that forgets idle keys once there are many: the limiters keep one entry
//! per IP they have seen, and a fleet's IPs come and go.
//!
//! A sweep walks every entry, so it must not run on every call: a map whose keys are
//! all still busy after a sweep would be walked again by the next call, and the next
//! (a fleet of more IPs than the threshold, all within their windows, made each grant
//! walk them all). After a sweep the next one waits until the map has doubled past
//! what it kept: each entry is walked a bounded number of times on average.

use std::collections::HashMap;

/// A map from limit key to `V`, swept of idle entries when it grows.
#[derive(Debug)]
pub(crate) struct Swept<V> {
    map: HashMap<String, V>,
    /// The size past which the next insert sweeps first.
    sweep_above: usize,
    /// The least `sweep_above`: small maps are never swept.
    floor: usize,
}

impl<V> Swept<V> {
    /// An empty map swept once it holds more than `floor` entries.
    pub(crate) fn new(floor: usize) -> Swept<V> {
        Swept {
            map: HashMap::new(),
            sweep_above: floor,
            floor,
        }
    }

    /// The entry of `key`, made by `make` when missing; before one is made, idle entries
    /// (those `busy` says no to) are swept when due. A known key costs no allocation.
    pub(crate) fn entry(
        &mut self,
        key: &str,
        make: impl FnOnce() -> V,
        busy: impl FnMut(&V) -> bool,
    ) -> &mut V {
        if !self.map.contains_key(key) {
            self.sweep(busy);
            self.map.insert(key.to_string(), make());
        }
        self.map
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("the entry was just made"))
    }

    /// Sweeps idle entries if the map has grown past its threshold; whether it did.
    fn sweep(&mut self, mut busy: impl FnMut(&V) -> bool) -> bool {
        if self.map.len() < self.sweep_above {
            return false;
        }
        self.map.retain(|_, v| busy(v));
        self.sweep_above = self.floor.max(self.map.len().saturating_mul(2));
        true
    }

    /// The entry of `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    /// The entry of `key`, if any, to change.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_of_busy_keys_is_not_walked_again_until_it_doubles() {
        let mut m: Swept<u32> = Swept::new(4);
        let mut walked = 0;
        for i in 0..4u32 {
            m.entry(&i.to_string(), || i, |_| true);
        }
        // The fifth new key finds 4: swept, all busy, kept.
        m.entry(
            "4",
            || 4,
            |_| {
                walked += 1;
                true
            },
        );
        assert_eq!((walked, m.len()), (4, 5));
        // Known keys never sweep; new ones not until 8 entries are there.
        for i in 5..8u32 {
            m.entry("0", || 0, |_| panic!("a known key swept"));
            m.entry(&i.to_string(), || i, |_| panic!("swept before doubling"));
        }
        assert_eq!(m.len(), 8);
        let mut walked = 0;
        m.entry(
            "8",
            || 8,
            |_| {
                walked += 1;
                true
            },
        );
        assert_eq!((walked, m.len()), (8, 9), "swept once it doubled");
    }

    #[test]
    fn idle_entries_are_dropped_and_the_threshold_falls_back() {
        let mut m: Swept<u32> = Swept::new(4);
        for i in 0..20u32 {
            // Only multiples of 10 stay busy.
            m.entry(&i.to_string(), || i, |v| v % 10 == 0);
        }
        assert!(m.get("0").is_some() && m.get("10").is_some());
        assert!(m.len() < 20, "idle entries dropped: {}", m.len());
        assert_eq!(m.get_mut("19").copied(), Some(19), "the newest is kept");
    }
}

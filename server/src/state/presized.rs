//! Reads the state's big maps at their full size at once. serde's own
//! `HashMap` impl caps the first allocation (a guard against hostile
//! lengths), so a map of a million messages was rehashed a dozen times
//! while a snapshot loaded; a snapshot is this cluster's own CRC-checked
//! data. (Message lists and idempotency keys size themselves the same way:
//! `messages.rs`, `keys.rs`.)

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use super::HashMap;

/// More than this many entries is not a map or list this server wrote.
pub(super) const MAX_PRESIZE: usize = 1 << 28;

struct MapVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
{
    type Value = HashMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let len = access.size_hint().unwrap_or(0).min(MAX_PRESIZE);
        let mut map = HashMap::with_capacity_and_hasher(len, Default::default());
        while let Some((k, v)) = access.next_entry()? {
            map.insert(k, v);
        }
        Ok(map)
    }
}

/// A map of the given length, allocated once.
#[derive(Debug)]
pub struct Presized<K, V>(pub HashMap<K, V>);

impl<'de, K, V> Deserialize<'de> for Presized<K, V>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MapVisitor(PhantomData)).map(Presized)
    }
}

pub fn map<'de, D, K, V>(d: D) -> Result<HashMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
{
    Presized::deserialize(d).map(|p| p.0)
}

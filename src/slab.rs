//! A slot table with generations: O(1) insert, remove and lookup by [`Key`], and a stale key
//! (its slot reused since) finds nothing instead of the wrong entry. Identifiers on the wire encode
//! the key (see [`crate::sip::ids`]), which is how a reply finds its transaction without hashing.

pub use crate::sip::ids::Key;

#[derive(Clone)]
pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Clone)]
struct Entry<T> {
    gen: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, value: T) -> Key {
        self.len += 1;
        if let Some(slot) = self.free.pop() {
            let e = &mut self.entries[slot as usize];
            e.gen = e.gen.wrapping_add(1);
            e.value = Some(value);
            return Key { slot, gen: e.gen };
        }
        let slot = self.entries.len() as u32;
        self.entries.push(Entry {
            gen: 0,
            value: Some(value),
        });
        Key { slot, gen: 0 }
    }

    /// The key the next `insert` will return (to write it into the value being inserted).
    pub fn next_key(&self) -> Key {
        match self.free.last() {
            Some(&slot) => Key {
                slot,
                gen: self.entries[slot as usize].gen.wrapping_add(1),
            },
            None => Key {
                slot: self.entries.len() as u32,
                gen: 0,
            },
        }
    }

    pub fn get(&self, k: Key) -> Option<&T> {
        self.entries
            .get(k.slot as usize)
            .filter(|e| e.gen == k.gen)
            .and_then(|e| e.value.as_ref())
    }

    pub fn get_mut(&mut self, k: Key) -> Option<&mut T> {
        self.entries
            .get_mut(k.slot as usize)
            .filter(|e| e.gen == k.gen)
            .and_then(|e| e.value.as_mut())
    }

    pub fn remove(&mut self, k: Key) -> Option<T> {
        let e = self.entries.get_mut(k.slot as usize)?;
        if e.gen != k.gen {
            return None;
        }
        let v = e.value.take()?;
        self.free.push(k.slot);
        self.len -= 1;
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn keys(&self) -> Vec<Key> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| Key {
                slot: i as u32,
                gen: e.gen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys_miss() {
        let mut s = Slab::default();
        let a = s.insert("a");
        assert_eq!(s.next_key(), Key { slot: 1, gen: 0 });
        assert_eq!(s.remove(a), Some("a"));
        let next = s.next_key();
        let b = s.insert("b");
        assert_eq!(b, next);
        assert_eq!(b.slot, a.slot);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.keys(), vec![b]);
    }
}

//! The bounded memory behind the catalogue cache: answers by key, the oldest evicted first
//! once there are too many or they weigh too much.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// What an entry costs beyond its body: the key, the map slots, the `Arc`, the tag.
const ENTRY_OVERHEAD: usize = 256;

/// A public read's answer, ready to send: the JSON body and its strong entity tag.
#[derive(Debug)]
pub struct Cached {
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl Cached {
    /// The memory this entry is counted as.
    fn cost(&self, key_len: usize) -> usize {
        self.body.len() + key_len + ENTRY_OVERHEAD
    }
}

/// One page of `GET /products`, as its query names it once parsed (`limit` already capped),
/// so two spellings of one query share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    pub category: Option<String>,
    pub after: Option<(OffsetDateTime, Uuid)>,
    pub limit: i64,
}

/// The largest a store may grow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub entries: usize,
    pub bytes: usize,
}

/// Entries of one kind, each stamped with when it was inserted.
#[derive(Debug)]
struct Fifo<K> {
    slots: HashMap<K, (u64, usize, Arc<Cached>)>,
    order: BTreeMap<u64, K>,
    bytes: usize,
}

impl<K> Default for Fifo<K> {
    fn default() -> Self {
        Self {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Fifo<K> {
    fn get(&self, key: &K) -> Option<Arc<Cached>> {
        self.slots.get(key).map(|(_, _, v)| v.clone())
    }

    fn insert(&mut self, seq: u64, key: K, cost: usize, value: Arc<Cached>) {
        self.remove(&key);
        self.order.insert(seq, key.clone());
        self.slots.insert(key, (seq, cost, value));
        self.bytes += cost;
    }

    fn remove(&mut self, key: &K) {
        if let Some((seq, cost, _)) = self.slots.remove(key) {
            self.order.remove(&seq);
            self.bytes -= cost;
        }
    }

    fn oldest(&self) -> Option<u64> {
        self.order.keys().next().copied()
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first()
            && let Some((_, cost, _)) = self.slots.remove(&key)
        {
            self.bytes -= cost;
        }
    }
}

/// Products by id and pages by query, under one budget of entries and bytes.
#[derive(Debug)]
pub struct Store {
    limits: Limits,
    items: Fifo<Uuid>,
    lists: Fifo<ListKey>,
    next: u64,
}

/// A key into either kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Item(Uuid),
    List(ListKey),
}

impl Key {
    fn len(&self) -> usize {
        match self {
            Key::Item(_) => 16,
            Key::List(k) => 48 + k.category.as_ref().map_or(0, String::len),
        }
    }
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            items: Fifo::default(),
            lists: Fifo::default(),
            next: 0,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Cached>> {
        match key {
            Key::Item(id) => self.items.get(id),
            Key::List(list) => self.lists.get(list),
        }
    }

    /// Keeps `value` under `key`, evicting the oldest entries until the store is within its
    /// limits again; a value larger than the whole budget is not kept at all.
    pub fn insert(&mut self, key: Key, value: Arc<Cached>) {
        let cost = value.cost(key.len());
        if cost > self.limits.bytes || self.limits.entries == 0 {
            return;
        }
        self.next += 1;
        match key {
            Key::Item(id) => self.items.insert(self.next, id, cost, value),
            Key::List(list) => self.lists.insert(self.next, list, cost, value),
        }
        while self.entries() > self.limits.entries || self.bytes() > self.limits.bytes {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        match (self.items.oldest(), self.lists.oldest()) {
            (Some(item), Some(list)) if item < list => self.items.pop_oldest(),
            (_, Some(_)) => self.lists.pop_oldest(),
            (Some(_), None) => self.items.pop_oldest(),
            (None, None) => {}
        }
    }

    /// Forgets a product and every page (any page may list it, or now should).
    pub fn forget_product(&mut self, id: Uuid) {
        self.items.remove(&id);
        self.lists = Fifo::default();
    }

    pub fn clear(&mut self) {
        self.items = Fifo::default();
        self.lists = Fifo::default();
    }

    /// How many products and pages it holds.
    pub fn entries(&self) -> usize {
        self.items.slots.len() + self.lists.slots.len()
    }

    /// What they weigh, as counted against the budget.
    pub fn bytes(&self) -> usize {
        self.items.bytes + self.lists.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: usize) -> Arc<Cached> {
        Arc::new(Cached {
            body: Bytes::from(vec![b'x'; bytes]),
            etag: HeaderValue::from_static("\"1\""),
        })
    }

    fn page(category: &str) -> Key {
        Key::List(ListKey {
            category: Some(category.into()),
            after: None,
            limit: 20,
        })
    }

    #[test]
    fn the_oldest_entries_go_first_once_there_are_too_many() {
        let mut store = Store::new(Limits {
            entries: 3,
            bytes: 1 << 20,
        });
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        store.insert(Key::Item(ids[0]), value(10));
        store.insert(page("a"), value(10));
        store.insert(Key::Item(ids[1]), value(10));
        store.insert(Key::Item(ids[2]), value(10));
        assert_eq!(store.entries(), 3);
        assert!(store.get(&Key::Item(ids[0])).is_none(), "the oldest went");
        store.insert(page("b"), value(10));
        assert!(store.get(&page("a")).is_none(), "then the oldest page");
        assert!(store.get(&Key::Item(ids[1])).is_some());
        assert!(store.get(&page("b")).is_some());
    }

    #[test]
    fn the_store_never_weighs_more_than_its_byte_budget() {
        let mut store = Store::new(Limits {
            entries: 1000,
            bytes: 10 * (1000 + ENTRY_OVERHEAD + 16),
        });
        for _ in 0..50 {
            store.insert(Key::Item(Uuid::new_v4()), value(1000));
            assert!(store.bytes() <= 10 * (1000 + ENTRY_OVERHEAD + 16));
        }
        assert_eq!(store.entries(), 10);
        store.insert(Key::Item(Uuid::new_v4()), value(1 << 20));
        assert_eq!(
            store.entries(),
            10,
            "a value over the whole budget is not kept"
        );
    }

    #[test]
    fn replacing_an_entry_counts_it_once() {
        let mut store = Store::new(Limits {
            entries: 10,
            bytes: 1 << 20,
        });
        let id = Uuid::new_v4();
        store.insert(Key::Item(id), value(100));
        let once = store.bytes();
        store.insert(Key::Item(id), value(100));
        assert_eq!((store.entries(), store.bytes()), (1, once));
    }

    #[test]
    fn forgetting_a_product_drops_it_and_every_page_but_no_other_product() {
        let mut store = Store::new(Limits {
            entries: 10,
            bytes: 1 << 20,
        });
        let (changed, other) = (Uuid::new_v4(), Uuid::new_v4());
        store.insert(Key::Item(changed), value(10));
        store.insert(Key::Item(other), value(10));
        store.insert(page("a"), value(10));
        store.insert(page("b"), value(10));
        store.forget_product(changed);
        assert!(store.get(&Key::Item(changed)).is_none());
        assert!(store.get(&page("a")).is_none() && store.get(&page("b")).is_none());
        assert!(store.get(&Key::Item(other)).is_some());
        assert_eq!(store.bytes(), value(10).cost(16));
        store.clear();
        assert_eq!(store.entries(), 0);
        assert_eq!(store.bytes(), 0);
    }
}

//! The session texts this store last read or wrote, so that a merge can splice
//! into a text it already has and go straight to the compare-and-set: one round
//! trip instead of two, as relay-session always reads a session before it saves
//! it. A text that is out of date costs nothing but a failed compare: the merge
//! then reads the stored text afresh.
//!
//! Bounded by the memory the entries really take (texts, ids, and the
//! bookkeeping of each entry), the `rememberedTextBytes` option; the oldest
//! entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// The default of the `rememberedTextBytes` option.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;
/// Memory an entry takes beyond its text and id: the map's slot (id, text
/// pointer, generation), the `Arc` and `Vec` headers, allocator rounding.
const ENTRY_OVERHEAD: usize = 128;
/// Memory a slot of the eviction order takes beyond its copy of the id.
const ORDER_OVERHEAD: usize = 48;

/// A remembered text, and whether it is known to hold one JSON object: a text
/// this store spliced is (the splice checked what it started from and every
/// value it wrote), a text `get` read has not been checked yet. A merge skips
/// the check of a checked text.
#[derive(Clone)]
pub struct Remembered {
    pub text: Arc<Vec<u8>>,
    pub checked: bool,
}

#[derive(Default)]
struct Inner {
    texts: HashMap<String, (Remembered, u64)>,
    /// (id, generation) in insertion order; stale generations are skipped.
    order: VecDeque<(String, u64)>,
    /// What `texts` and `order` take, counted as above.
    bytes: usize,
    generation: u64,
}

pub struct Texts {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

fn entry_cost(id: &str, text: &[u8]) -> usize {
    text.len() + id.len() + ENTRY_OVERHEAD
}

fn order_cost(id: &str) -> usize {
    id.len() + ORDER_OVERHEAD
}

impl Texts {
    /// Texts kept within `max_bytes`; 0 keeps none.
    pub fn new(max_bytes: usize) -> Self {
        Texts {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Remembered> {
        if self.max_bytes == 0 {
            return None;
        }
        self.inner().texts.get(id).map(|(t, _)| t.clone())
    }

    pub fn put(&self, id: &str, text: Arc<Vec<u8>>, checked: bool) {
        if self.max_bytes == 0 {
            return;
        }
        let mut inner = self.inner();
        inner.remove(id);
        // One entry may take an eighth of the budget at most.
        if entry_cost(id, &text) + order_cost(id) > self.max_bytes / 8 {
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.bytes += entry_cost(id, &text) + order_cost(id);
        inner
            .texts
            .insert(id.to_owned(), (Remembered { text, checked }, generation));
        inner.order.push_back((id.to_owned(), generation));
        while inner.bytes > self.max_bytes {
            let Some((oldest, g)) = inner.order.pop_front() else {
                break;
            };
            inner.bytes -= order_cost(&oldest);
            if inner
                .texts
                .get(&oldest)
                .is_some_and(|(_, current)| *current == g)
            {
                inner.remove(&oldest);
            }
        }
        // Entries replaced or forgotten leave stale slots in `order`; keep it bounded.
        if inner.order.len() > 2 * inner.texts.len() + 64 {
            let Inner {
                texts,
                order,
                bytes,
                ..
            } = &mut *inner;
            order.retain(|(id, g)| {
                let live = texts.get(id).is_some_and(|(_, current)| current == g);
                if !live {
                    *bytes -= order_cost(id);
                }
                live
            });
        }
    }

    pub fn forget(&self, id: &str) {
        if self.max_bytes == 0 {
            return;
        }
        self.inner().remove(id);
    }

    /// The memory the entries take, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.inner().bytes
    }
}

impl Inner {
    /// Removes id's text (its slot in `order` stays until it is popped or pruned).
    fn remove(&mut self, id: &str) {
        if let Some((old, _)) = self.texts.remove(id) {
            self.bytes -= entry_cost(id, &old.text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![b'x'; n])
    }

    #[test]
    fn keeps_replaces_and_forgets() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        t.put("a", text(10), false);
        t.put("a", text(20), false);
        assert_eq!(t.get("a").unwrap().text.len(), 20);
        t.forget("a");
        assert!(t.get("a").is_none());
    }

    #[test]
    fn the_oldest_go_first_when_over_budget() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        let each = DEFAULT_MAX_BYTES / 16;
        for i in 0..20 {
            t.put(&i.to_string(), text(each), false);
        }
        assert!(t.get("0").is_none());
        assert!(t.get("19").is_some());
        assert!(t.bytes() <= DEFAULT_MAX_BYTES);
    }

    #[test]
    fn ids_and_bookkeeping_count_against_the_bound() {
        // Empty sessions under long ids: the ids are what takes the memory.
        let t = Texts::new(1 << 20);
        let long = "i".repeat(8192);
        for i in 0..1000 {
            t.put(&format!("{long}{i}"), text(2), false);
        }
        let inner = t.inner();
        let real: usize = inner.texts.keys().map(|k| k.len() + 2).sum::<usize>()
            + inner.order.iter().map(|(k, _)| k.len()).sum::<usize>();
        assert!(real <= 1 << 20, "{real}");
        assert!(inner.bytes <= 1 << 20);
        assert!(
            inner.texts.len() > 40 && inner.texts.len() < 70,
            "{}",
            inner.texts.len()
        );
    }

    #[test]
    fn order_stays_bounded_when_one_id_is_written_often() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        for _ in 0..10_000 {
            t.put("a", text(8), false);
        }
        assert!(t.inner().order.len() <= 2 + 64 + 1);
        assert_eq!(
            t.bytes(),
            entry_cost("a", &[0; 8]) + t.inner().order.len() * order_cost("a")
        );
    }

    #[test]
    fn huge_texts_and_a_zero_bound_keep_nothing() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        t.put("a", text(DEFAULT_MAX_BYTES / 8), false);
        assert!(t.get("a").is_none());
        assert_eq!(t.bytes(), 0);
        let off = Texts::new(0);
        off.put("a", text(1), false);
        assert!(off.get("a").is_none());
    }
}

//! The session texts this store last read or wrote, so that a merge can splice
//! into a text it already has and go straight to the compare-and-set: one round
//! trip instead of two, as relay-session always reads a session before it saves
//! it. A text that is out of date costs nothing but a failed compare: the merge
//! then reads the stored text afresh.
//!
//! Bounded by bytes; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Texts kept at most, in bytes, per store.
pub const MAX_BYTES: usize = 8 << 20;
/// A text larger than this is not kept.
const MAX_TEXT: usize = 1 << 20;

#[derive(Default)]
struct Inner {
    texts: HashMap<String, (Arc<Vec<u8>>, u64)>,
    /// (id, generation) in insertion order; stale generations are skipped.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    generation: u64,
}

#[derive(Default)]
pub struct Texts {
    inner: Mutex<Inner>,
}

impl Texts {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        self.inner().texts.get(id).map(|(t, _)| t.clone())
    }

    pub fn put(&self, id: &str, text: Arc<Vec<u8>>) {
        let mut inner = self.inner();
        if let Some((old, _)) = inner.texts.remove(id) {
            inner.bytes -= old.len();
        }
        if text.len() > MAX_TEXT {
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.bytes += text.len();
        inner.texts.insert(id.to_owned(), (text, generation));
        inner.order.push_back((id.to_owned(), generation));
        while inner.bytes > MAX_BYTES {
            let Some((oldest, g)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .texts
                .get(&oldest)
                .is_some_and(|(_, current)| *current == g)
            {
                if let Some((t, _)) = inner.texts.remove(&oldest) {
                    inner.bytes -= t.len();
                }
            }
        }
        // Entries replaced or forgotten leave stale ids in `order`; keep it bounded.
        if inner.order.len() > 2 * inner.texts.len() + 64 {
            let Inner { texts, order, .. } = &mut *inner;
            order.retain(|(id, g)| texts.get(id).is_some_and(|(_, current)| current == g));
        }
    }

    pub fn forget(&self, id: &str) {
        let mut inner = self.inner();
        if let Some((old, _)) = inner.texts.remove(id) {
            inner.bytes -= old.len();
        }
    }

    pub fn bytes(&self) -> usize {
        self.inner().bytes
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
        let t = Texts::default();
        t.put("a", text(10));
        t.put("a", text(20));
        assert_eq!(t.get("a").unwrap().len(), 20);
        assert_eq!(t.bytes(), 20);
        t.forget("a");
        assert!(t.get("a").is_none());
        assert_eq!(t.bytes(), 0);
    }

    #[test]
    fn the_oldest_go_first_when_over_budget() {
        let t = Texts::default();
        let each = MAX_TEXT / 2;
        let fit = MAX_BYTES / each;
        for i in 0..=fit {
            t.put(&i.to_string(), text(each));
        }
        assert!(t.get("0").is_none());
        assert!(t.get("1").is_some() && t.get(&fit.to_string()).is_some());
        assert_eq!(t.bytes(), MAX_BYTES);
    }

    #[test]
    fn order_stays_bounded_when_one_id_is_written_often() {
        let t = Texts::default();
        for _ in 0..10_000 {
            t.put("a", text(8));
        }
        assert!(t.inner().order.len() <= 2 + 64 + 1);
    }

    #[test]
    fn huge_texts_are_not_kept() {
        let t = Texts::default();
        t.put("a", text(MAX_TEXT + 1));
        assert!(t.get("a").is_none());
        assert_eq!(t.bytes(), 0);
    }
}

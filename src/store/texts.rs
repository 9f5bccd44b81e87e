//! The session texts this store holds: the read cache, and what saves a
//! merge its read.
//!
//! Every text this store last read or wrote is kept, so that a merge can
//! splice into a text it already has and go straight to the compare-and-set:
//! one round trip instead of two. A text that is out of date costs nothing
//! but a failed compare: the merge then reads the stored text afresh.
//!
//! While the server tracks the session keys (`link/tracking.rs`), a text
//! read or written on a connection that was confirmed to track is also
//! *servable*: a `get` is answered from it, with no round trip, until its
//! ttl ends or the server reports a change. What makes that safe:
//! - A text is kept only by the op that holds the key's latest *ticket*,
//!   taken when its command was planned. A report of a change (or a flush,
//!   or a lost connection) takes every ticket back, so a reply that crossed
//!   a report on its way in (the classic race of client-side caching) is
//!   never kept, whichever of the two was handled first.
//! - Writes by this store take a ticket too and drop the text until their
//!   own reply; `store.js` does not ask for a key with a write in flight.
//! - A text's ttl counts from before its command was sent, so it ends no
//!   later than the key's on the server.
//!
//! Bounded by the memory the entries really take (texts, ids, and the
//! bookkeeping of each entry), the `rememberedTextBytes` option; the oldest
//! entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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
    /// Until when a `get` may be answered with it; None: only a merge's hint.
    pub servable_until: Option<Instant>,
}

/// The right to keep a key's text once the op's reply is in: the key's
/// latest, and not taken back by a report of a change meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

#[derive(Default)]
struct Inner {
    texts: HashMap<String, (Remembered, u64)>,
    /// The latest ticket of each key with an op in flight.
    tickets: HashMap<String, u64>,
    next_ticket: u64,
    /// (id, generation) in insertion order; stale generations are skipped.
    order: VecDeque<(String, u64)>,
    /// What `texts` and `order` take, counted as above.
    bytes: usize,
    generation: u64,
}

pub struct Texts {
    inner: Mutex<Inner>,
    max_bytes: usize,
    pub counts: CacheCounts,
}

/// What the read cache did, for `stats().readCache`.
#[derive(Default)]
pub struct CacheCounts {
    /// `get`s answered from memory.
    pub hits: AtomicU64,
    /// `get`s that went to Redis while the cache was on.
    pub misses: AtomicU64,
    /// Keys the server reported changed.
    pub invalidations: AtomicU64,
    /// Times everything was forgotten: a flush, a connection lost or replaced.
    pub flushes: AtomicU64,
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
            counts: CacheCounts::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The text this store holds for `id`, servable or not (a merge's hint).
    pub fn get(&self, id: &str) -> Option<Remembered> {
        if self.max_bytes == 0 {
            return None;
        }
        self.inner().texts.get(id).map(|(t, _)| t.clone())
    }

    /// The text a `get` of `id` may be answered with at `now`, counted as a
    /// hit; None (a miss) sends the `get` to Redis.
    pub fn serve(&self, id: &str, now: Instant) -> Option<Arc<Vec<u8>>> {
        let served = self.inner().texts.get(id).and_then(|(t, _)| {
            t.servable_until
                .filter(|until| *until > now)
                .map(|_| Arc::clone(&t.text))
        });
        let counter = match served {
            Some(_) => &self.counts.hits,
            None => &self.counts.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        served
    }

    /// An op on `id` is being sent: the text is dropped until its reply, and
    /// only this ticket may keep one then.
    pub fn begin(&self, id: &str) -> Ticket {
        let mut inner = self.inner();
        inner.remove(id);
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        if inner.tickets.len() > 2 * inner.texts.len() + 1024 {
            // Tickets of ops that never settled: taking them back only means
            // their texts are not kept.
            inner.tickets.clear();
        }
        inner.tickets.insert(id.to_owned(), ticket);
        Ticket(ticket)
    }

    /// Keeps `text` as `id`'s (`servable_until`: for `get`s, None: only for
    /// merges) if `ticket` is still the key's: no later op, report of a
    /// change or flush came in between.
    pub fn keep(
        &self,
        id: &str,
        ticket: Ticket,
        text: Arc<Vec<u8>>,
        checked: bool,
        servable_until: Option<Instant>,
    ) {
        let mut inner = self.inner();
        if inner.tickets.get(id) != Some(&ticket.0) {
            return;
        }
        inner.tickets.remove(id);
        if self.max_bytes == 0 {
            return;
        }
        let entry = Remembered {
            text,
            checked,
            servable_until,
        };
        self.put(&mut inner, id, entry);
    }

    /// The op with `ticket` settled without a text to keep.
    pub fn end(&self, id: &str, ticket: Ticket) {
        let mut inner = self.inner();
        if inner.tickets.get(id) == Some(&ticket.0) {
            inner.tickets.remove(id);
        }
    }

    fn put(&self, inner: &mut Inner, id: &str, entry: Remembered) {
        inner.remove(id);
        // One entry may take an eighth of the budget at most.
        if entry_cost(id, &entry.text) + order_cost(id) > self.max_bytes / 8 {
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.bytes += entry_cost(id, &entry.text) + order_cost(id);
        inner.texts.insert(id.to_owned(), (entry, generation));
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

    /// The server reported that the keys of these ids changed: their texts
    /// and tickets go.
    pub fn invalidate<'i>(&self, ids: impl Iterator<Item = &'i str>) {
        let mut inner = self.inner();
        for id in ids {
            self.counts.invalidations.fetch_add(1, Ordering::Relaxed);
            inner.remove(id);
            inner.tickets.remove(id);
        }
    }

    /// This store ended the session `id` itself, outside a batch (a
    /// compare-and-delete of `destroyUserSessions`): its text goes, and so
    /// does its ticket, so that a read in flight whose reply crossed the
    /// ending keeps nothing (the server reports no change of this store's
    /// own to it: NOLOOP).
    pub fn ended(&self, id: &str) {
        let mut inner = self.inner();
        inner.remove(id);
        inner.tickets.remove(id);
    }

    /// Anything may have changed: every text and ticket goes.
    pub fn flush(&self) {
        let mut inner = self.inner();
        self.counts.flushes.fetch_add(1, Ordering::Relaxed);
        inner.texts.clear();
        inner.tickets.clear();
        inner.order.clear();
        inner.bytes = 0;
    }

    /// Drops `id`'s text (out of date, or unknown now).
    pub fn forget(&self, id: &str) {
        self.inner().remove(id);
    }

    /// How many texts are held.
    pub fn count(&self) -> usize {
        self.inner().texts.len()
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

    fn later() -> Option<Instant> {
        Some(Instant::now() + std::time::Duration::from_secs(60))
    }

    impl Texts {
        fn remember(&self, id: &str, text: Arc<Vec<u8>>, checked: bool) {
            let ticket = self.begin(id);
            self.keep(id, ticket, text, checked, None);
        }
    }

    #[test]
    fn an_ended_op_takes_its_ticket_back_and_only_its_own() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        let first = t.begin("a");
        let second = t.begin("a");
        // The earlier op ends: the later one's ticket stays.
        t.end("a", first);
        t.keep("a", second, text(2), false, later());
        assert_eq!(t.serve("a", Instant::now()).unwrap().len(), 2);
        // An op that ended keeps nothing after.
        let third = t.begin("a");
        t.end("a", third);
        t.keep("a", third, text(3), false, later());
        assert!(t.get("a").is_none());
    }

    #[test]
    fn tickets_of_ops_that_never_settle_are_dropped_past_the_bound() {
        // With no text kept, the bound is 1,024 tickets: the 1,026th op
        // drops the 1,025 before it (their texts are then not kept).
        let ops = || {
            let t = Texts::new(DEFAULT_MAX_BYTES);
            let tickets: Vec<Ticket> = (0..1025).map(|i| t.begin(&i.to_string())).collect();
            (t, tickets)
        };
        let (t, tickets) = ops();
        t.keep("0", tickets[0], text(1), false, later());
        assert!(t.get("0").is_some(), "dropped within the bound");
        let (t, tickets) = ops();
        t.begin("1025");
        t.keep("0", tickets[0], text(1), false, later());
        assert!(t.get("0").is_none(), "kept past the bound");
    }

    #[test]
    fn replaced_entries_leave_the_count_and_the_bytes_exact() {
        // A text replaced again and again leaves stale slots in the order of
        // eviction until they are swept: the bytes counted stay those of the
        // live entries (and their slots), and the count is theirs.
        let t = Texts::new(DEFAULT_MAX_BYTES);
        for i in 0..500 {
            t.remember("a", text(10 + i % 3), false);
            t.remember(&format!("b{}", i % 4), text(20), false);
        }
        assert_eq!(t.count(), 5);
        let live = entry_cost("a", &[0; 10 + 499 % 3])
            + order_cost("a")
            + (0..4)
                .map(|i| entry_cost(&format!("b{i}"), &[0; 20]) + order_cost(&format!("b{i}")))
                .sum::<usize>();
        let inner = t.inner();
        let stale = inner.order.len() - 5;
        assert!(stale <= 2 * 5 + 64, "{stale} stale slots");
        let stale_bytes: usize = inner
            .order
            .iter()
            .filter(|(id, g)| inner.texts.get(id).is_none_or(|(_, current)| current != g))
            .map(|(id, _)| order_cost(id))
            .sum();
        drop(inner);
        assert_eq!(t.bytes(), live + stale_bytes);
    }

    #[test]
    fn the_budget_is_used_to_the_byte() {
        // Eight texts of one size fill a budget of eight of them exactly:
        // all stay; one entry may take an eighth of the budget, not a byte
        // more.
        let one = entry_cost("a0", &[b'x'; 100]) + order_cost("a0");
        let t = Texts::new(8 * one);
        for i in 0..8 {
            t.remember(&format!("a{i}"), text(100), false);
        }
        for i in 0..8 {
            assert!(t.get(&format!("a{i}")).is_some(), "a{i} was dropped");
        }
        t.remember("b0", text(101), false);
        assert!(t.get("b0").is_none(), "an entry past an eighth was kept");
        assert!(t.get("a0").is_some());
    }

    #[test]
    fn a_report_between_send_and_reply_keeps_the_text_out() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        // The reply comes after the report of a change: not kept.
        let ticket = t.begin("a");
        t.invalidate(["a"].into_iter());
        t.keep("a", ticket, text(3), false, later());
        assert!(t.get("a").is_none());
        // A flush in between: not kept either.
        let ticket = t.begin("a");
        t.flush();
        t.keep("a", ticket, text(3), false, later());
        assert!(t.get("a").is_none());
        // A later op on the key holds the ticket: the earlier one keeps nothing.
        let first = t.begin("a");
        let second = t.begin("a");
        t.keep("a", first, text(1), false, later());
        assert!(t.get("a").is_none());
        t.keep("a", second, text(2), false, later());
        assert_eq!(t.serve("a", Instant::now()).unwrap().len(), 2);
        // A report after the text was kept drops it.
        t.invalidate(["a"].into_iter());
        assert!(t.serve("a", Instant::now()).is_none());
    }

    #[test]
    fn a_text_is_served_only_until_its_ttl_ends() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        let now = Instant::now();
        let ticket = t.begin("a");
        t.keep(
            "a",
            ticket,
            text(3),
            false,
            Some(now + std::time::Duration::from_millis(5)),
        );
        assert!(t.serve("a", now).is_some());
        assert!(t
            .serve("a", now + std::time::Duration::from_millis(5))
            .is_none());
        // A text kept for merges only is never served.
        t.remember("b", text(3), true);
        assert!(t.get("b").is_some());
        assert!(t.serve("b", now).is_none());
        assert_eq!(t.counts.hits.load(Ordering::Relaxed), 1);
        assert_eq!(t.counts.misses.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn keeps_replaces_and_forgets() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        t.remember("a", text(10), false);
        t.remember("a", text(20), false);
        assert_eq!(t.get("a").unwrap().text.len(), 20);
        t.forget("a");
        assert!(t.get("a").is_none());
    }

    #[test]
    fn the_oldest_go_first_when_over_budget() {
        let t = Texts::new(DEFAULT_MAX_BYTES);
        let each = DEFAULT_MAX_BYTES / 16;
        for i in 0..20 {
            t.remember(&i.to_string(), text(each), false);
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
            t.remember(&format!("{long}{i}"), text(2), false);
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
            t.remember("a", text(8), false);
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
        t.remember("a", text(DEFAULT_MAX_BYTES / 8), false);
        assert!(t.get("a").is_none());
        assert_eq!(t.bytes(), 0);
        let off = Texts::new(0);
        off.remember("a", text(1), false);
        assert!(off.get("a").is_none());
    }
}

//! Batch-results objects and their marks: which owned ids are a batch's
//! results (an OpenAI output file; an Anthropic batch is one by its path),
//! and how many of their lines are charged. A mark exists only beside an
//! owned id, so the marks are bounded by the table's cap and forgotten with
//! their id (whose results are then unreachable anyway).

use std::borrow::Cow;

use super::{lock, Line, Owners, Table};

impl Table {
    /// Raises `id`'s mark to `n` (an id without an owner has none).
    pub(super) fn raise_mark(&mut self, id: &str, n: u64) {
        if let Some((id, _)) = self.owner.get_key_value(id) {
            let mark = self.results.entry(id.clone()).or_default();
            *mark = (*mark).max(n);
        }
    }
}

impl Owners {
    /// Records the answer a key received to a creation or a read: every id
    /// it names becomes the key's, and a batch's `output_file_id` is marked
    /// as that batch's results (reading it back charges them).
    pub fn record_answer(&self, body: &[u8], key: &str) {
        for id in super::answer_ids(body) {
            self.record(&id, key);
        }
        if let Some(id) = super::rules::batch_output(body) {
            if self.owned_by(&id, key) && !self.is_batch_output(&id) {
                lock(&self.table).raise_mark(&id, 0);
                self.write(&Line {
                    id: Cow::Borrowed(&id),
                    k: None,
                    b: Some(0),
                });
            }
        }
    }

    /// Whether `id` is known as a batch's output file.
    pub fn is_batch_output(&self, id: &str) -> bool {
        lock(&self.table).results.contains_key(id)
    }

    /// Lines of `id`'s results charged so far (`None`: none ever read).
    pub fn result_mark(&self, id: &str) -> Option<u64> {
        lock(&self.table).results.get(id).copied()
    }

    /// Claims results line `line` of `id`: true (and the mark moves past
    /// it) when no read charged it yet. Readers go through a file in order,
    /// so every line below the mark was charged or was not chargeable.
    pub fn claim_result_line(&self, id: &str, line: u64) -> bool {
        let mut t = lock(&self.table);
        let Some((id, _)) = t.owner.get_key_value(id) else {
            return false;
        };
        let id = id.clone();
        let mark = t.results.entry(id).or_default();
        if line < *mark {
            return false;
        }
        *mark = line.saturating_add(1);
        true
    }

    /// Queues `id`'s mark for the file (replay keeps the highest).
    pub fn save_result_mark(&self, id: &str) {
        if let Some(n) = self.result_mark(id) {
            self.write(&Line {
                id: Cow::Borrowed(id),
                k: None,
                b: Some(n),
            });
        }
    }
}

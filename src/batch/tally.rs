//! Reads a results file as it streams past: splits it into lines (holding
//! one line at a time), prices each succeeded request at the batch rate and
//! sums what this read charges, per model.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::lines::{parse, Format, Line};
use super::Marks;
use crate::pricing::{Nanos, Price};
use crate::usage::Usage;

/// Longest results line read (bytes): one request's whole answer. A longer
/// line is skipped (not charged) and counted in [`Charge::skipped`].
pub const MAX_LINE: usize = 16 << 20;
/// Most models one read-back is summed by; lines of further models are
/// summed under [`OTHER_MODELS`].
pub const MAX_MODELS: usize = 16;
/// The model name lines past [`MAX_MODELS`] are summed under.
pub const OTHER_MODELS: &str = "~other";
/// Unpriced model names warned about once each, at most this many.
const MAX_WARNED: usize = 256;

/// The price of a model by name (`None`: not in the price table).
pub type Pricer = Arc<dyn Fn(&str) -> Option<Price> + Send + Sync>;

/// What one read-back charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charge {
    /// The object read: an output file id or an Anthropic batch id.
    pub object: String,
    /// Lines read.
    pub lines: u64,
    /// Succeeded requests charged by this read.
    pub charged: u64,
    /// Succeeded requests an earlier (or concurrent) read had charged.
    pub already: u64,
    /// Errored, expired or canceled requests (not billed).
    pub not_charged: u64,
    /// Lines too long or unreadable (not charged).
    pub skipped: u64,
    /// What this read charged, by model (at most [`MAX_MODELS`] + 1).
    pub models: Vec<ModelCharge>,
}

/// The requests of one model a read charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCharge {
    pub model: String,
    pub requests: u64,
    pub usage: Usage,
    /// At the batch rate; 0 for a model with no price.
    pub cost: Nanos,
    /// The model has a price.
    pub priced: bool,
}

impl Charge {
    /// Total cost of what this read charged.
    pub fn cost(&self) -> Nanos {
        self.models
            .iter()
            .fold(0, |sum: Nanos, m| sum.saturating_add(m.cost))
    }

    /// Tokens of what this read charged, summed.
    pub fn usage(&self) -> Usage {
        self.models
            .iter()
            .fold(Usage::default(), |sum, m| add(sum, &m.usage))
    }
}

fn add(a: Usage, b: &Usage) -> Usage {
    Usage {
        input: a.input.saturating_add(b.input),
        cached_input: a.cached_input.saturating_add(b.cached_input),
        cache_write: a.cache_write.saturating_add(b.cache_write),
        cache_write_1h: a.cache_write_1h.saturating_add(b.cache_write_1h),
        output: a.output.saturating_add(b.output),
        reasoning: a.reasoning.saturating_add(b.reasoning),
    }
}

/// Follows one results file through a response body.
pub struct Tally {
    format: Format,
    marks: Arc<dyn Marks>,
    price: Pricer,
    max_line: usize,
    /// The current line's bytes so far (only when it spans chunks).
    line: Vec<u8>,
    /// The current line passed `max_line`: skipped up to its newline.
    overlong: bool,
    /// The index of the current line.
    index: u64,
    out: Charge,
    finished: bool,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("format", &self.format)
            .field("index", &self.index)
            .field("out", &self.out)
            .finish_non_exhaustive()
    }
}

impl Tally {
    pub fn new(format: Format, object: &str, marks: Arc<dyn Marks>, price: Pricer) -> Tally {
        Tally {
            format,
            marks,
            price,
            max_line: MAX_LINE,
            line: Vec::new(),
            overlong: false,
            index: 0,
            out: Charge {
                object: object.to_owned(),
                ..Charge::default()
            },
            finished: false,
        }
    }

    /// A smaller line bound (tests).
    pub fn with_max_line(mut self, max: usize) -> Tally {
        self.max_line = max;
        self
    }

    /// Reads the complete lines of a chunk; keeps a partial last line.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (head, tail) = (&rest[..i], &rest[i + 1..]);
            rest = tail;
            if std::mem::take(&mut self.overlong) {
                self.skip();
            } else if self.line.is_empty() {
                if head.len() > self.max_line {
                    self.skip();
                } else {
                    self.on_line(head);
                }
            } else if self.line.len() + head.len() > self.max_line {
                self.line = Vec::new();
                self.skip();
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.on_line(&line);
                line.clear();
                // Keep the allocation for the next long line.
                self.line = line;
            }
        }
        if rest.is_empty() || self.overlong {
            return;
        }
        if self.line.len() + rest.len() > self.max_line {
            // Free the partial line now; its end is skipped when it comes.
            self.line = Vec::new();
            self.overlong = true;
        } else {
            self.line.extend_from_slice(rest);
        }
    }

    /// What the read charged. A last line without a newline counts only if
    /// it is a whole results line (the body may have been cut mid-line);
    /// the object's mark is saved when anything was charged.
    pub fn finish(&mut self) -> Charge {
        if !std::mem::replace(&mut self.finished, true) {
            let tail = std::mem::take(&mut self.line);
            if self.overlong {
                self.skip();
            } else if !tail.is_empty() && parse(self.format, &tail) != Line::Unreadable {
                self.on_line(&tail);
            }
            if self.out.charged > 0 {
                self.marks.save(&self.out.object);
            }
        }
        std::mem::take(&mut self.out)
    }

    fn skip(&mut self) {
        self.index += 1;
        self.out.lines += 1;
        self.out.skipped += 1;
    }

    fn on_line(&mut self, bytes: &[u8]) {
        let index = self.index;
        self.index += 1;
        self.out.lines += 1;
        match parse(self.format, bytes) {
            Line::Succeeded { model, usage } => {
                if self.marks.claim(&self.out.object, index) {
                    self.out.charged += 1;
                    self.charge(model, usage);
                } else {
                    self.out.already += 1;
                }
            }
            Line::NotCharged => self.out.not_charged += 1,
            Line::Unreadable => self.out.skipped += 1,
        }
    }

    fn charge(&mut self, model: String, usage: Usage) {
        let price = (self.price)(&model);
        if price.is_none() {
            warn_unpriced(&model);
        }
        let cost = price.map_or(0, |p| p.batch_cost(&usage));
        let models = &mut self.out.models;
        let at = match models.iter().position(|m| m.model == model) {
            Some(i) => i,
            None => {
                let name = if models.len() < MAX_MODELS {
                    model
                } else {
                    OTHER_MODELS.to_owned()
                };
                match models.iter().position(|m| m.model == name) {
                    Some(i) => i,
                    None => {
                        models.push(ModelCharge {
                            model: name,
                            priced: true,
                            ..ModelCharge::default()
                        });
                        models.len() - 1
                    }
                }
            }
        };
        let m = &mut models[at];
        m.requests += 1;
        m.usage = add(m.usage, &usage);
        m.cost = m.cost.saturating_add(cost);
        m.priced &= price.is_some();
    }
}

/// Warns once per model name (for the first [`MAX_WARNED`] names) that
/// batch results of a model with no price are recorded at cost 0.
fn warn_unpriced(model: &str) {
    static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let set = warned.get_or_insert_with(HashSet::new);
    if set.len() >= MAX_WARNED || set.contains(model) {
        return;
    }
    set.insert(model.to_owned());
    tracing::warn!(
        model,
        "batch results of a model with no price: tokens recorded, cost 0 (add a [[pricing]] entry)"
    );
}

#[cfg(test)]
mod tests;

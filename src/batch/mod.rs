//! Batch results read back through Sluice: priced at the batch rate and
//! charged, exactly once per result line, to the key that created the batch.
//!
//! A read-back is `GET /v1/files/{id}/content` of a batch's output file (an
//! id ownership recorded from the batch's `output_file_id`) or
//! `GET /v1/messages/batches/{id}/results`. Its JSONL answer streams to the
//! client untouched while a [`Tally`] reads it line by line (one line held
//! at a time, at most [`MAX_LINE`] bytes), prices each succeeded request
//! with [`crate::pricing::Price::batch_cost`], and claims the line's index
//! from the object's high-water mark ([`Marks`]): a line an earlier or a
//! concurrent read already charged is not charged again.

mod lines;
mod tally;

pub use lines::{parse, Format, Line};
pub use tally::{Charge, ModelCharge, Pricer, Tally, MAX_LINE, MAX_MODELS, OTHER_MODELS};

use crate::ownership::Owners;

/// Per-object high-water marks: how many lines of a results file are
/// charged. Every line below the mark was charged (or was not chargeable).
pub trait Marks: Send + Sync {
    /// Claims line `line` of `object` for charging: true when no read has
    /// charged it (the mark moves past it), false when one has.
    fn claim(&self, object: &str, line: u64) -> bool;
    /// Persists the object's mark (after a read that charged something).
    fn save(&self, object: &str);
}

impl Marks for Owners {
    fn claim(&self, object: &str, line: u64) -> bool {
        self.claim_result_line(object, line)
    }

    fn save(&self, object: &str) {
        self.save_result_mark(object);
    }
}

/// Whether a request reads batch results back, and whose shape they are:
/// `GET /v1/files/{id}/content` (an OpenAI batch's output file, if
/// ownership knows the id as one) or `GET /v1/messages/batches/{id}/results`.
pub fn read_back<'a>(path: &'a str, method: &http::Method) -> Option<(Format, &'a str)> {
    if method != http::Method::GET {
        return None;
    }
    let below = path.strip_prefix("/v1/")?;
    let segments: Vec<&str> = below.split('/').collect();
    match segments.as_slice() {
        ["files", id, "content"] if !id.is_empty() => Some((Format::OpenAi, id)),
        ["messages", "batches", id, "results"] if !id.is_empty() => Some((Format::Anthropic, id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_paths() {
        let get = http::Method::GET;
        assert_eq!(
            read_back("/v1/files/file-1/content", &get),
            Some((Format::OpenAi, "file-1"))
        );
        assert_eq!(
            read_back("/v1/messages/batches/msgbatch_1/results", &get),
            Some((Format::Anthropic, "msgbatch_1"))
        );
        for (path, method) in [
            ("/v1/files/file-1/content", http::Method::DELETE),
            ("/v1/files/file-1", get.clone()),
            ("/v1/files//content", get.clone()),
            ("/v1/messages/batches/msgbatch_1", get.clone()),
            ("/v1/batches/batch_1/results", get.clone()),
        ] {
            assert_eq!(read_back(path, &method), None, "{method} {path}");
        }
    }
}

//! Server-sent events framing: split an arbitrarily fragmented byte stream
//! into complete events, and read an event's `event:` and `data:` fields.
//!
//! The splitter copies only what it must: bytes of an event that is still
//! incomplete at the end of a chunk. Whole events are handed out as slices of
//! the chunk they arrived in.

use std::borrow::Cow;

/// Splits a byte stream into complete raw event blocks (each ending with its
/// blank line).
#[derive(Debug, Default)]
pub struct SseSplitter {
    /// Bytes of an event that has not ended yet.
    partial: Vec<u8>,
    /// Offset into `partial` of the first line not yet scanned.
    resume: usize,
}

impl SseSplitter {
    /// Feeds one chunk and calls `on_block` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_block: impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            let consumed = split_blocks(chunk, 0, &mut on_block);
            if consumed.end < chunk.len() {
                self.partial.extend_from_slice(&chunk[consumed.end..]);
                self.resume = consumed.resume - consumed.end;
            }
            return;
        }
        self.partial.extend_from_slice(chunk);
        let consumed = split_blocks(&self.partial, self.resume, &mut on_block);
        self.partial.drain(..consumed.end);
        self.resume = consumed.resume - consumed.end;
    }

    /// Bytes held back because their event is not complete yet.
    pub fn pending(&self) -> &[u8] {
        &self.partial
    }
}

struct Consumed {
    /// End of the last complete block.
    end: usize,
    /// Start of the first unscanned line.
    resume: usize,
}

/// Emits each complete block in `data`; scanning for line ends starts at
/// `resume` (earlier lines are known not to be blank).
fn split_blocks(data: &[u8], resume: usize, on_block: &mut impl FnMut(&[u8])) -> Consumed {
    let mut block_start = 0;
    let mut line_start = resume;
    while let Some(off) = memchr::memchr(b'\n', &data[line_start..]) {
        let nl = line_start + off;
        let line = &data[line_start..nl];
        if line.is_empty() || line == b"\r" {
            on_block(&data[block_start..nl + 1]);
            block_start = nl + 1;
        }
        line_start = nl + 1;
    }
    Consumed {
        end: block_start,
        resume: line_start,
    }
}

/// One parsed event.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, empty when absent.
    pub event: &'a [u8],
    /// The `data:` lines joined by `\n`.
    pub data: Cow<'a, [u8]>,
}

/// Parses the fields of a raw event block.
pub fn parse_block(block: &[u8]) -> SseEvent<'_> {
    let mut event: &[u8] = b"";
    let mut data: Option<Cow<'_, [u8]>> = None;
    for raw_line in block.split(|&b| b == b'\n') {
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if let Some(v) = field(line, b"data") {
            data = Some(match data {
                None => Cow::Borrowed(v),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(v);
                    Cow::Owned(joined)
                }
            });
        } else if let Some(v) = field(line, b"event") {
            event = v;
        }
    }
    SseEvent {
        event,
        data: data.unwrap_or(Cow::Borrowed(b"")),
    }
}

/// The value of `name: value` (one optional space after the colon).
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut s = SseSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |b| out.push(b.to_vec()));
        }
        out
    }

    #[test]
    fn whole_events_in_one_chunk() {
        let blocks = collect(&[b"data: a\n\ndata: b\n\n"]);
        assert_eq!(
            blocks,
            vec![b"data: a\n\n".to_vec(), b"data: b\n\n".to_vec()]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream: &[u8] =
            b"event: message_start\ndata: {\"x\":\"\xc3\xa9\"}\n\n: ping\n\ndata: a\r\ndata: b\r\n\r\ndata: [DONE]\n\n";
        let whole = collect(&[stream]);
        assert_eq!(whole.len(), 4);
        for i in 0..stream.len() {
            for j in i..stream.len() {
                let parts = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(collect(&parts), whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn incomplete_tail_is_held() {
        let mut s = SseSplitter::default();
        let mut n = 0;
        s.feed(b"data: a\n\ndata: b", |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(s.pending(), b"data: b");
    }

    #[test]
    fn parse_fields() {
        let e = parse_block(b"event: delta\ndata: {\"a\":1}\n\n");
        assert_eq!(e.event, b"delta");
        assert_eq!(&*e.data, b"{\"a\":1}");
        let e = parse_block(b"data:x\r\ndata: y\r\n\r\n");
        assert_eq!(&*e.data, b"x\ny");
        assert_eq!(e.event, b"");
    }
}

//! Server-sent events framing: split an arbitrarily fragmented byte stream
//! into complete events, and read an event's `event:` and `data:` fields.
//!
//! The splitter copies only what it must: bytes of an event that is still
//! incomplete at the end of a chunk. Whole events are handed out as slices of
//! the chunk they arrived in.

use std::borrow::Cow;

/// The largest event a default splitter holds: 16 MiB.
pub const DEFAULT_MAX_EVENT: usize = 16 << 20;

/// Splits a byte stream into complete raw event blocks (each ending with its
/// blank line).
///
/// An incomplete event is held until it ends, up to `max_event` bytes: an
/// event that grows past that (an upstream that never sends the blank line)
/// marks the splitter `oversized`, its bytes are freed, and nothing more is
/// split.
#[derive(Debug)]
pub struct SseSplitter {
    /// Bytes of an event that has not ended yet.
    partial: Vec<u8>,
    /// Offset into `partial` of the first line not yet scanned.
    resume: usize,
    max_event: usize,
    oversized: bool,
}

impl Default for SseSplitter {
    fn default() -> Self {
        Self::with_max_event(DEFAULT_MAX_EVENT)
    }
}

impl SseSplitter {
    /// A splitter that gives up on events larger than `max_event` bytes.
    pub fn with_max_event(max_event: usize) -> Self {
        Self {
            partial: Vec::new(),
            resume: 0,
            max_event,
            oversized: false,
        }
    }

    /// Feeds one chunk and calls `on_block` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_block: impl FnMut(&[u8])) {
        if self.oversized {
            return;
        }
        if self.partial.is_empty() {
            let consumed = split_blocks(chunk, 0, &mut on_block);
            if consumed.end < chunk.len() {
                let rest = &chunk[consumed.end..];
                if rest.len() > self.max_event {
                    self.overflow();
                    return;
                }
                self.partial.extend_from_slice(rest);
                self.resume = consumed.resume - consumed.end;
            }
            return;
        }
        self.grow(chunk.len());
        self.partial.extend_from_slice(chunk);
        let consumed = split_blocks(&self.partial, self.resume, &mut on_block);
        self.partial.drain(..consumed.end);
        self.resume = consumed.resume - consumed.end;
        if self.partial.len() > self.max_event {
            self.overflow();
        }
    }

    /// An event grew past `max_event`; the stream cannot be split further.
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// The largest event this splitter holds.
    pub fn max_event(&self) -> usize {
        self.max_event
    }

    fn overflow(&mut self) {
        self.oversized = true;
        self.partial = Vec::new();
        self.resume = 0;
    }

    /// Makes room for `extra` more bytes: doubling as usual, but never past
    /// what the bound can need, so a huge event costs at most the bound plus
    /// one chunk.
    fn grow(&mut self, extra: usize) {
        let need = self.partial.len().saturating_add(extra);
        if need > self.partial.capacity() {
            let target = need
                .checked_next_power_of_two()
                .unwrap_or(need)
                .min(self.max_event.saturating_add(extra))
                .max(need);
            self.partial.reserve_exact(target - self.partial.len());
        }
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
    // Lines found with `memchr` (a data line is most of a block).
    let mut rest = block;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let raw_line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
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
    fn an_event_past_the_bound_stops_the_splitter_and_frees_its_bytes() {
        let mut s = SseSplitter::with_max_event(16);
        let mut out = Vec::new();
        s.feed(b"data: ok\n\ndata: 0123", |b| out.push(b.to_vec()));
        assert_eq!(out, vec![b"data: ok\n\n".to_vec()]);
        assert!(!s.oversized());
        s.feed(b"456789", |b| out.push(b.to_vec()));
        assert!(
            !s.oversized(),
            "16 bytes pending: at the bound, not past it"
        );
        s.feed(b"x", |b| out.push(b.to_vec()));
        assert!(s.oversized());
        assert!(s.pending().is_empty() && s.partial.capacity() == 0);
        s.feed(b"\n\ndata: late\n\n", |b| out.push(b.to_vec()));
        assert_eq!(out.len(), 1, "nothing is split after the overflow");
        // One chunk holding the whole oversized tail.
        let mut s = SseSplitter::with_max_event(16);
        s.feed(b"data: ok\n\ndata: 0123456789abcdef", |_| {});
        assert!(s.oversized());
    }

    #[test]
    fn events_up_to_the_bound_pass_in_any_split() {
        let stream: &[u8] = b"data: 0123456789\n\ndata: abcdefghij\n\n";
        for i in 0..stream.len() {
            let mut s = SseSplitter::with_max_event(18);
            let mut n = 0;
            s.feed(&stream[..i], |_| n += 1);
            s.feed(&stream[i..], |_| n += 1);
            assert_eq!((n, s.oversized()), (2, false), "split at {i}");
        }
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

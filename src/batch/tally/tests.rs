use std::collections::HashMap;

use super::*;

/// Marks in memory, counting saves.
#[derive(Default)]
struct Memory {
    marks: Mutex<HashMap<String, u64>>,
    saves: Mutex<u64>,
}

impl Marks for Memory {
    fn claim(&self, object: &str, line: u64) -> bool {
        let mut m = self.marks.lock().expect("lock");
        let mark = m.entry(object.to_owned()).or_default();
        if line < *mark {
            return false;
        }
        *mark = line + 1;
        true
    }

    fn save(&self, _: &str) {
        *self.saves.lock().expect("lock") += 1;
    }
}

fn pricer() -> Pricer {
    // $1 in, $2 out per 1M tokens: 1,000 / 2,000 nano-dollars a token.
    Arc::new(|model: &str| (model == "m").then(|| Price::from_per_million(1.0, None, None, 2.0)))
}

fn ok(model: &str, input: u64, output: u64) -> String {
    format!(
        r#"{{"custom_id":"x","response":{{"status_code":200,"body":{{"model":"{model}","usage":{{"prompt_tokens":{input},"completion_tokens":{output}}}}}}},"error":null}}"#
    )
}

const FAILED: &str =
    r#"{"custom_id":"y","response":null,"error":{"code":"batch_expired","message":"x"}}"#;

fn file() -> String {
    [
        ok("m", 1000, 500),
        FAILED.to_owned(),
        ok("m", 2000, 1000),
        ok("unpriced", 10, 5),
    ]
    .join("\n")
        + "\n"
}

fn tally(marks: &Arc<Memory>) -> Tally {
    Tally::new(Format::OpenAi, "file-out", marks.clone(), pricer())
}

#[test]
fn sums_succeeded_lines_at_the_batch_rate_at_every_split_point() {
    let body = file();
    // Half of the list price: (1000 + 2000) * 1000 + (500 + 1000) * 2000, / 2.
    let want = (3_000 * 1_000 + 1_500 * 2_000) / 2;
    for split in 0..=body.len() {
        let marks = Arc::new(Memory::default());
        let mut t = tally(&marks);
        t.feed(&body.as_bytes()[..split]);
        t.feed(&body.as_bytes()[split..]);
        let c = t.finish();
        assert_eq!(c.cost(), want, "split at {split}");
        assert_eq!(
            (c.lines, c.charged, c.not_charged, c.skipped),
            (4, 3, 1, 0),
            "{split}"
        );
        assert_eq!(c.usage().input, 3_010);
        assert_eq!(c.usage().output, 1_505);
        let unpriced = c.models.iter().find(|m| m.model == "unpriced").expect("m");
        assert_eq!((unpriced.cost, unpriced.priced), (0, false));
        assert_eq!(*marks.saves.lock().expect("lock"), 1);
    }
}

#[test]
fn a_second_read_charges_only_lines_not_yet_charged() {
    let marks = Arc::new(Memory::default());
    let body = file();
    // The first read stops after two lines (the client went away).
    let cut = body.find(FAILED).expect("line") + FAILED.len() + 1;
    let mut first = tally(&marks);
    first.feed(&body.as_bytes()[..cut]);
    let c = first.finish();
    assert_eq!((c.lines, c.charged), (2, 1));
    let mut second = tally(&marks);
    second.feed(body.as_bytes());
    let c = second.finish();
    assert_eq!((c.lines, c.charged, c.already), (4, 2, 1));
    assert_eq!(c.cost(), (2_000 * 1_000 + 1_000 * 2_000) / 2);
    // A third read charges nothing and saves nothing.
    let mut third = tally(&marks);
    third.feed(body.as_bytes());
    let c = third.finish();
    assert_eq!((c.charged, c.already, c.cost()), (0, 3, 0));
    assert!(c.models.is_empty());
    assert_eq!(*marks.saves.lock().expect("lock"), 2);
}

#[test]
fn a_line_past_the_bound_is_skipped_and_counted_whole() {
    let long = ok("m", 7, 7).replace("\"x\"", &format!("\"{}\"", "x".repeat(500)));
    let body = [ok("m", 1, 1), long, ok("m", 2, 2)].join("\n");
    for split in [0, 10, 100, 300, 520, body.len()] {
        let marks = Arc::new(Memory::default());
        let mut t = tally(&marks).with_max_line(200);
        t.feed(&body.as_bytes()[..split]);
        t.feed(&body.as_bytes()[split..]);
        let c = t.finish();
        assert_eq!((c.lines, c.charged, c.skipped), (3, 2, 1), "split {split}");
        assert_eq!(c.usage().input, 3);
        // The skipped line keeps its index: the third line is line 2.
        assert_eq!(marks.marks.lock().expect("lock")["file-out"], 3);
    }
}

#[test]
fn a_cut_last_line_is_not_charged_and_a_whole_one_is() {
    let marks = Arc::new(Memory::default());
    let line = ok("m", 1, 1);
    let mut t = tally(&marks);
    t.feed(&line.as_bytes()[..line.len() - 3]);
    let c = t.finish();
    assert_eq!((c.lines, c.charged, c.skipped), (0, 0, 0));
    let mut t = tally(&marks);
    t.feed(line.as_bytes());
    assert_eq!(t.finish().charged, 1);
}

#[test]
fn models_past_the_bound_are_summed_together() {
    let marks = Arc::new(Memory::default());
    let mut t = tally(&marks);
    for i in 0..MAX_MODELS + 3 {
        t.feed(format!("{}\n", ok(&format!("model-{i}"), 1, 1)).as_bytes());
    }
    let c = t.finish();
    assert_eq!(c.models.len(), MAX_MODELS + 1);
    let other = c.models.last().expect("other");
    assert_eq!((other.model.as_str(), other.requests), (OTHER_MODELS, 3));
}

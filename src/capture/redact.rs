//! Redaction, applied in the writer before anything reaches the file: keys
//! and credentials always, then the configured patterns and JSON paths.
//! Plain functions of the text or JSON, tested without a file.

use std::sync::OnceLock;

use regex::{Captures, Regex};
use serde_json::Value;

use crate::config::{Builtin, Redact, Step};

/// What a blanked JSON path holds.
pub const REDACTED: &str = "[redacted]";

/// Key-like strings: OpenAI (`sk-`, `sk-proj-`), Anthropic (`sk-ant-`),
/// and the usual bearer and key parameter spellings.
fn keys() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}|\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*|\b(?:api[_-]?key|x-api-key|access[_-]?token|secret)(\W{1,4})[A-Za-z0-9._~+/\-]{8,}",
        )
        .unwrap_or_else(|_| never())
    })
}

fn email() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
            .unwrap_or_else(|_| never())
    })
}

/// International (`+44 20 7946 0958`) and North American
/// (`(555) 123-4567`, `555.123.4567`) phone numbers.
fn phone() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"\+\d{1,3}(?:[\s.\-]?\(?\d{1,4}\)?){2,5}\d|\(?\b\d{3}\)?[\s.\-]\d{3}[\s.\-]\d{4}\b",
        )
        .unwrap_or_else(|_| never())
    })
}

/// 13 to 19 digits, optionally grouped by spaces or dashes; only those
/// passing the Luhn check are blanked.
fn card() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b").unwrap_or_else(|_| never()))
}

/// A regex that matches nothing (the built-in ones are constants and
/// compile; this keeps `unwrap` out of the code).
fn never() -> Regex {
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("a constant regex"))
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    let mut double = false;
    for c in digits.chars().rev().filter(char::is_ascii_digit) {
        let mut d = c as u32 - '0' as u32;
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum % 10 == 0
}

/// `text` with every match of `re` replaced (unchanged, not copied, when
/// nothing matches).
fn apply(text: String, re: &Regex, with: impl regex::Replacer) -> String {
    if !re.is_match(&text) {
        return text;
    }
    re.replace_all(&text, with).into_owned()
}

/// A redactor for one config: the always-on rules plus its patterns.
pub struct Redactor<'a> {
    cfg: &'a Redact,
    /// Secrets known by value (provider keys from the environment).
    literals: &'a [String],
}

impl<'a> Redactor<'a> {
    pub fn new(cfg: &'a Redact, literals: &'a [String]) -> Self {
        Redactor { cfg, literals }
    }

    /// The text with every secret and configured pattern blanked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for lit in self.literals.iter().filter(|l| l.len() >= 8) {
            if out.contains(lit.as_str()) {
                out = out.replace(lit.as_str(), "[key]");
            }
        }
        out = apply(out, keys(), |c: &Captures<'_>| {
            let whole = c.get(0).map_or("", |m| m.as_str());
            match c.get(1) {
                // `api_key: "abc…"` keeps its name: what was there stays readable.
                Some(sep) => {
                    let name_end = sep.start() - c.get(0).map_or(0, |m| m.start());
                    format!("{}{}[key]", &whole[..name_end], sep.as_str())
                }
                None => "[key]".to_owned(),
            }
        });
        for b in &self.cfg.builtins {
            out = match b {
                Builtin::Email => apply(out, email(), "[email]"),
                Builtin::Phone => apply(out, phone(), "[phone]"),
                Builtin::Card => apply(out, card(), |c: &Captures<'_>| {
                    let m = c.get(0).map_or("", |m| m.as_str());
                    if luhn(m) {
                        "[card]".to_owned()
                    } else {
                        m.to_owned()
                    }
                }),
            };
        }
        for re in &self.cfg.regexes {
            out = apply(out, re, REDACTED);
        }
        out
    }

    /// The JSON with the configured paths blanked, then every string (and
    /// object key) redacted as text.
    pub fn json(&self, mut v: Value) -> Value {
        for p in &self.cfg.json_paths {
            blank(&mut v, &p.steps);
        }
        self.strings(&mut v);
        v
    }

    fn strings(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                let r = self.text(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.strings(v)),
            Value::Object(o) => {
                let old = std::mem::take(o);
                for (k, mut v) in old {
                    self.strings(&mut v);
                    o.insert(self.text(&k), v);
                }
            }
            _ => {}
        }
    }
}

/// Replaces what `steps` names with [`REDACTED`].
fn blank(v: &mut Value, steps: &[Step]) {
    let Some((first, rest)) = steps.split_first() else {
        *v = Value::String(REDACTED.into());
        return;
    };
    match (first, v) {
        (Step::Field(name), Value::Object(o)) => {
            if let Some(child) = o.get_mut(name) {
                blank(child, rest);
            }
        }
        (Step::Index(i), Value::Array(a)) => {
            if let Some(child) = a.get_mut(*i) {
                blank(child, rest);
            }
        }
        (Step::Each, Value::Array(a)) => a.iter_mut().for_each(|c| blank(c, rest)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::JsonPath;

    fn all() -> Redact {
        Redact {
            builtins: vec![Builtin::Email, Builtin::Phone, Builtin::Card],
            regexes: vec![Regex::new(r"ACME-\d{4}").expect("re")],
            json_paths: vec![JsonPath::parse("metadata.secret").expect("path")],
        }
    }

    #[test]
    fn keys_are_always_blanked() {
        let cfg = Redact::default();
        let lits = vec!["upstream-secret-value".to_owned()];
        let r = Redactor::new(&cfg, &lits);
        let t = r.text(
            "use sk-proj-abcdefgh12345678 or sk-ant-api03-XYZxyz123456 with Bearer abc.def-ghijk \
             and api_key=\"qwertyuiop123\" and upstream-secret-value; mail bob@example.com",
        );
        for secret in [
            "sk-proj",
            "sk-ant",
            "abc.def",
            "qwertyuiop",
            "upstream-secret",
        ] {
            assert!(!t.contains(secret), "{secret} in {t}");
        }
        assert!(t.contains("api_key=\"[key]"), "{t}");
        // E-mail is not blanked unless configured.
        assert!(t.contains("bob@example.com"));
    }

    #[test]
    fn configured_patterns_are_blanked() {
        let cfg = all();
        let r = Redactor::new(&cfg, &[]);
        let t = r.text(
            "mail Bob.Smith+x@mail.example.co.uk, call +44 20 7946 0958 or (555) 123-4567, \
             card 4111 1111 1111 1111, order 1234567890123 stays, ticket ACME-1234",
        );
        assert!(t.contains("[email]") && !t.contains("example.co.uk"), "{t}");
        assert!(!t.contains("7946") && !t.contains("123-4567"), "{t}");
        assert!(t.contains("[card]") && !t.contains("4111"), "{t}");
        // Fails the Luhn check: an order number, not a card.
        assert!(t.contains("1234567890123"), "{t}");
        assert!(t.contains(REDACTED) && !t.contains("ACME-1234"), "{t}");
    }

    #[test]
    fn json_paths_and_strings() {
        let cfg = Redact {
            json_paths: vec![
                JsonPath::parse("messages[*].content").expect("p"),
                JsonPath::parse("metadata.secret").expect("p"),
            ],
            ..all()
        };
        let r = Redactor::new(&cfg, &[]);
        let v = r.json(json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"text": "x"}]}],
            "metadata": {"secret": {"a": 1}, "who": "eve@example.org"},
            "bob@example.org": 1
        }));
        assert_eq!(v["messages"][0]["content"], REDACTED);
        assert_eq!(v["messages"][1]["content"], REDACTED);
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["metadata"]["secret"], REDACTED);
        assert_eq!(v["metadata"]["who"], "[email]");
        assert!(v.get("[email]").is_some());
        assert_eq!(v["model"], "gpt-4o");
    }
}

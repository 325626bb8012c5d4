use super::*;
use serde_json::json;

fn reference(encoding: &str, text: &str) -> u64 {
    let bpe = match encoding {
        "o200k" => tiktoken_rs::o200k_base().expect("o200k"),
        _ => tiktoken_rs::cl100k_base().expect("cl100k"),
    };
    bpe.encode_with_special_tokens(text).len() as u64
}

/// Texts of the kind agents send: prose, code, JSON, logs, many scripts.
fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = vec![
        "Hello, world!".into(),
        "You are a helpful assistant. Answer concisely and cite sources.".into(),
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n\nprint([fib(i) for i in range(20)])\n".into(),
        "{\"tool\": \"search\", \"args\": {\"query\": \"rust async cancellation\", \"limit\": 10}}".into(),
        "2026-11-26T03:52:12.510Z ERROR worker[42]: connection reset by peer (os error 104)\n    at tokio::net::TcpStream::poll_read\n".into(),
        "Ünïcödé façade naïve café — «quotes» and ‘single’ … ellipsis".into(),
        "日本語のテキストと中文文本，还有한국어 텍스트도 있습니다。".into(),
        "Emoji 🚀🔥👩‍💻 and combining e\u{301} a\u{308} and ZWJ 👨‍👩‍👧‍👦".into(),
        "    indented\n\n\n\ttabs\t\tand   multiple   spaces   \r\n windows line".into(),
        "I'm sure they'll say it's fine, but we've seen what'd happen. DON'T SHOUT'S".into(),
        "12345678901234567890 3.14159 1e-10 0xDEADBEEF 1,000,000".into(),
        "https://example.com/path?query=value&other=1#fragment user@example.com".into(),
        "SELECT u.id, COUNT(*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id HAVING COUNT(*) > 5;".into(),
        "Ελληνικά, русский текст, עברית, العربية, हिन्दी".into(),
        String::new(),
        " ".into(),
        "\n".into(),
    ];
    let long: String = texts
        .iter()
        .cycle()
        .take(200)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    texts.push(long);
    texts
}

#[test]
fn counts_match_the_reference_tokenizer() {
    for text in corpus() {
        assert_eq!(
            Family::O200k.count(&text),
            reference("o200k", &text),
            "o200k: {text:?}"
        );
        assert_eq!(
            Family::Cl100k.count(&text),
            reference("cl100k", &text),
            "cl100k: {text:?}"
        );
    }
}

/// Random texts built from the fragments the pre-tokenizers treat
/// differently (every letter category, marks, digits, contractions in both
/// cases, every kind of whitespace, punctuation runs, slashes, newlines),
/// counted against tiktoken-rs: the split and the merge together.
#[test]
fn random_texts_count_as_the_reference_does() {
    let fragments = [
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "\n\n",
        " \n ",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "a",
        "the",
        "The",
        "THE",
        "tHe",
        "word",
        "Words",
        "x",
        "'s",
        "'S",
        "'ll",
        "'LL",
        "'re",
        "'d",
        "'",
        "\"",
        "ǅ",
        "ʰ",
        "語",
        "日本",
        "한국",
        "é",
        "e\u{301}",
        "\u{301}",
        "Ω",
        "ß",
        "ſ",
        "0",
        "7",
        "123",
        "4567",
        "٣",
        "½",
        ".",
        ",",
        "!",
        "?",
        "...",
        "--",
        "//",
        "/",
        "{",
        "}",
        "()",
        "=>",
        "::",
        "#",
        "@",
        "$",
        "%",
        "_",
        "\\",
        "🚀",
        "👩\u{200d}💻",
        "\u{fe0f}",
        "\u{0}",
    ];
    let o200k = tiktoken_rs::o200k_base().expect("o200k");
    let cl100k = tiktoken_rs::cl100k_base().expect("cl100k");
    let mut rng = fastrand::Rng::with_seed(20261201);
    for _ in 0..3_000 {
        let n = rng.usize(1..40);
        let text: String = (0..n)
            .map(|_| fragments[rng.usize(..fragments.len())])
            .collect();
        assert_eq!(
            Family::O200k.count_one(&text),
            o200k.encode_ordinary(&text).len() as u64,
            "o200k: {text:?}"
        );
        assert_eq!(
            Family::Cl100k.count_one(&text),
            cl100k.encode_ordinary(&text).len() as u64,
            "cl100k: {text:?}"
        );
    }
}

#[test]
fn an_anthropic_provider_always_counts_as_claude() {
    assert_eq!(Family::for_upstream("my-alias", true), Family::Claude);
    assert_eq!(Family::for_upstream("gpt-4o", true), Family::Claude);
    assert_eq!(Family::for_upstream("gpt-4", false), Family::Cl100k);
    assert_eq!(
        Family::for_upstream("claude-sonnet-4", false),
        Family::Claude
    );
}

#[test]
fn families() {
    assert_eq!(Family::for_model("gpt-4o-mini"), Family::O200k);
    assert_eq!(Family::for_model("o3-mini"), Family::O200k);
    assert_eq!(Family::for_model("gpt-5"), Family::O200k);
    assert_eq!(Family::for_model("gpt-4-turbo"), Family::Cl100k);
    assert_eq!(Family::for_model("gpt-3.5-turbo"), Family::Cl100k);
    assert_eq!(Family::for_model("claude-sonnet-4-5"), Family::Claude);
    assert_eq!(Family::for_model("openai/gpt-4o"), Family::O200k);
}

#[test]
fn chat_format_overhead_matches_openai_cookbook() {
    // OpenAI's cookbook (num_tokens_from_messages) for gpt-4o: 3 per message,
    // +1 per name, +3 reply priming.
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "bob", "content": "Hi there"},
    ]});
    let f = Family::O200k;
    let expected = 3
        + f.count("system")
        + f.count("You are terse.")
        + 3
        + f.count("user")
        + 1
        + f.count("bob")
        + f.count("Hi there")
        + 3;
    let n = count_or_bound(Endpoint::ChatCompletions, body.to_string().as_bytes(), f);
    assert_eq!(n, expected);
}

#[test]
fn parts_images_and_tools_are_counted() {
    let f = Family::O200k;
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
        ]},
    ], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
    let n = count_or_bound(Endpoint::ChatCompletions, body.to_string().as_bytes(), f);
    let tools = serde_json::to_string(&body["tools"]).expect("json");
    assert_eq!(
        n,
        3 + f.count("user") + f.count("What is in this image?") + 85 + 765 + 3 + f.count(&tools)
    );
}

#[test]
fn anthropic_is_a_conservative_estimate() {
    let body = json!({"model": "claude-x", "system": "Be brief.", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello world"}]},
    ]});
    let n = count_or_bound(
        Endpoint::Messages,
        body.to_string().as_bytes(),
        Family::Claude,
    );
    let cl = Family::Cl100k;
    assert!(
        n >= cl.count("Be brief.") + cl.count("hello world") + 3,
        "{n}"
    );
}

#[test]
fn upper_bound_is_an_upper_bound() {
    for text in corpus() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
        let raw = body.to_string();
        for f in [Family::O200k, Family::Cl100k, Family::Claude] {
            let exact = count_or_bound(Endpoint::ChatCompletions, raw.as_bytes(), f);
            assert!(upper_bound(raw.as_bytes(), f) >= exact, "{f:?} {text:?}");
        }
    }
}

#[test]
fn other_endpoints() {
    let f = Family::O200k;
    let emb = json!({"model": "m", "input": ["alpha beta", "gamma"]}).to_string();
    assert_eq!(
        count_or_bound(Endpoint::Embeddings, emb.as_bytes(), f),
        f.count("alpha beta") + f.count("gamma")
    );
    let cmp = json!({"model": "m", "prompt": "Once upon a time"}).to_string();
    assert_eq!(
        count_or_bound(Endpoint::Completions, cmp.as_bytes(), f),
        f.count("Once upon a time")
    );
    let resp = json!({"model": "m", "instructions": "Be kind.", "input": "Hi"}).to_string();
    assert_eq!(
        count_or_bound(Endpoint::Responses, resp.as_bytes(), f),
        f.count("Be kind.") + f.count("Hi") + 3
    );
}

#[test]
fn parallel_split_counts_exactly() {
    let mut text = String::new();
    let pieces = corpus();
    while text.len() < 600 * 1024 {
        for t in &pieces {
            text.push_str(t);
            text.push_str(if text.len() % 3 == 0 { "\n" } else { "\n\n  " });
        }
    }
    let parts = split_at_lines(&text, 4);
    assert!(parts.len() > 1);
    assert_eq!(parts.concat(), text);
    for f in [Family::O200k, Family::Cl100k] {
        let single: u64 = f.count_one(&text);
        assert_eq!(f.count(&text), single, "{f:?}");
        assert_eq!(
            single,
            reference(
                if f == Family::O200k {
                    "o200k"
                } else {
                    "cl100k"
                },
                &text
            )
        );
    }
}

#[test]
fn unreadable_input_is_an_error_not_zero() {
    for body in [
        r#"{"model":"m","messages":"not a list"}"#,
        r#"{"model":"m","messages":[{"role":1,"content":"x"}]}"#,
        r#"{"model":"m","messages":[],"messages":[]}"#,
    ] {
        assert!(
            count_request(Endpoint::ChatCompletions, body.as_bytes(), Family::O200k).is_err(),
            "{body}"
        );
    }
}

/// Resident memory of this process in KiB (Linux), for the table-size probe.
fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// What each tokenizer table costs resident (run by hand:
/// `cargo nextest run --run-ignored only -E 'test(table_rss)' --no-capture`;
/// nextest runs every test in its own process, so the figures are clean).
#[test]
#[ignore = "a measurement, not a check"]
fn table_rss_of_each_family() {
    let text = corpus().join("\n");
    let before = vm_rss_kib();
    let which = std::env::var("SLUICE_RSS_FAMILY").unwrap_or_default();
    // `tiktoken-*`: the reference crate's tables, for comparison.
    let (family, n) = match which.as_str() {
        "o200k" => ("o200k", Family::O200k.count(&text)),
        "tiktoken-o200k" => ("tiktoken-o200k", reference("o200k", &text)),
        "tiktoken-cl100k" => ("tiktoken-cl100k", reference("cl100k", &text)),
        _ => ("cl100k", Family::Cl100k.count(&text)),
    };
    let after = vm_rss_kib();
    eprintln!(
        "{family}: {n} tokens; VmRSS {before} KiB -> {after} KiB (+{} KiB)",
        after.saturating_sub(before)
    );
}

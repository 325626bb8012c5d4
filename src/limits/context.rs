//! Known context windows, so an over-long request fails fast with a clear
//! error instead of a round trip. A model's `context_window` in config wins.

/// Context window (input + output tokens) of a well-known upstream model.
pub fn context_window(model: &str) -> Option<u64> {
    let m = crate::text::model_name(model);
    // Most specific prefixes first.
    const TABLE: &[(&str, u64)] = &[
        ("gpt-4.1", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-4o", 128_000),
        ("chatgpt-4o", 128_000),
        ("gpt-4.5", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-1106", 128_000),
        ("gpt-4-0125", 128_000),
        ("gpt-4-32k", 32_768),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 16_385),
        ("o1-mini", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4", 200_000),
        ("claude", 200_000),
    ];
    TABLE
        .iter()
        .find(|(p, _)| m.starts_with(p))
        .map(|&(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models() {
        assert_eq!(context_window("gpt-4o-mini"), Some(128_000));
        assert_eq!(context_window("gpt-4.1-nano"), Some(1_047_576));
        assert_eq!(context_window("gpt-4"), Some(8_192));
        assert_eq!(context_window("gpt-4-turbo-2024-04-09"), Some(128_000));
        assert_eq!(context_window("claude-sonnet-4-5"), Some(200_000));
        assert_eq!(context_window("llama-3-70b"), None);
    }
}

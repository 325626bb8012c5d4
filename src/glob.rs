//! Model-name globs: `*` stands for any run of characters. A leaf module:
//! config validation, routing, allow-lists, limits and budgets all match
//! model names the same way.

/// Whether `model` matches a model filter: `None` matches everything,
/// otherwise any of the globs (key allow-lists, rate limits, budgets).
pub fn in_filter(patterns: Option<&Vec<String>>, model: &str) -> bool {
    patterns.is_none_or(|pats| pats.iter().any(|p| glob_match(p, model)))
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("claude-*", "claude-sonnet-4"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("gpt-*-mini", "gpt-4o-mini"));
        assert!(!glob_match("gpt-*-mini", "gpt-4o"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*bc", "abc-"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("ab*ab", "ab"));
    }
}

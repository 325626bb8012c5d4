//! Request bodies: OpenAI chat completions → Anthropic messages and back.

mod content;
mod to_chat;
mod to_messages;

pub use to_chat::messages_to_chat;
pub use to_messages::chat_to_messages;

/// Splits a `data:` URL (`data:image/png;base64,AAAA`) into its media type
/// and base64 payload; `None` for anything else (plain text data URLs too).
pub(crate) fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(
            split_data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
        assert_eq!(split_data_url("data:text/plain,hello"), None);
        assert_eq!(split_data_url("https://x/y.png"), None);
    }
}

#[cfg(test)]
mod edge_tests;

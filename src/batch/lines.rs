//! One line of a batch's results, in each provider's shape: plain functions
//! from the line's bytes to what it would be charged.

use serde::Deserialize;

use crate::usage::{Usage, UsageAcc, UsageFields};

/// Whose results file a read-back is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `GET /v1/files/{output_file_id}/content`: one
    /// `{"custom_id","response":{"status_code","body"},"error"}` per line.
    OpenAi,
    /// `GET /v1/messages/batches/{id}/results`: one
    /// `{"custom_id","result":{"type","message"}}` per line.
    Anthropic,
}

/// What one results line comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A request the provider answered: chargeable.
    Succeeded { model: String, usage: Usage },
    /// An error, an expired or canceled request: the provider charges
    /// nothing for it.
    NotCharged,
    /// Not a results line Sluice can read (or implausible usage).
    Unreadable,
}

#[derive(Deserialize)]
struct OpenAiLine {
    response: Option<OpenAiResponse>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct OpenAiResponse {
    status_code: Option<u16>,
    body: Option<Answer>,
}

#[derive(Deserialize)]
struct AnthropicLine {
    result: AnthropicResult,
}

#[derive(Deserialize)]
struct AnthropicResult {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Answer>,
}

/// The answer inside a line: only its model and usage are read.
#[derive(Deserialize)]
struct Answer {
    model: Option<String>,
    usage: Option<UsageFields>,
}

/// Reads one line (without its newline). Blank lines are `NotCharged`.
pub fn parse(format: Format, line: &[u8]) -> Line {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::NotCharged;
    }
    match format {
        Format::OpenAi => {
            let Ok(l) = serde_json::from_slice::<OpenAiLine>(line) else {
                return Line::Unreadable;
            };
            match l.response {
                // OpenAI sets `error` (and no response) for a request that
                // failed or expired; a response with an error status is not
                // billed either.
                Some(r)
                    if l.error.is_none()
                        && r.status_code.is_some_and(|s| (200..300).contains(&s)) =>
                {
                    answered(r.body, false)
                }
                _ => Line::NotCharged,
            }
        }
        Format::Anthropic => {
            let Ok(l) = serde_json::from_slice::<AnthropicLine>(line) else {
                return Line::Unreadable;
            };
            match l.result.kind.as_str() {
                "succeeded" => answered(l.result.message, true),
                // `errored`, `canceled`, `expired`: not billed.
                _ => Line::NotCharged,
            }
        }
    }
}

/// A successful answer's model and usage; without either it cannot be
/// priced or counted.
fn answered(body: Option<Answer>, anthropic: bool) -> Line {
    let Some(Answer {
        model: Some(model),
        usage: Some(fields),
    }) = body
    else {
        return Line::Unreadable;
    };
    let mut acc = UsageAcc::new(anthropic);
    acc.add(&fields);
    match acc.get() {
        Some(usage) => Line::Succeeded { model, usage },
        None => Line::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(model: &str, input: u64, output: u64) -> Line {
        Line::Succeeded {
            model: model.into(),
            usage: Usage {
                input,
                output,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn openai_lines() {
        let line = br#"{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"r","body":{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":200}}}},"error":null}"#;
        assert_eq!(
            parse(Format::OpenAi, line),
            Line::Succeeded {
                model: "gpt-4o-mini-2024-07-18".into(),
                usage: Usage {
                    input: 1000,
                    cached_input: 200,
                    output: 500,
                    ..Usage::default()
                }
            }
        );
        // The Responses API's usage names.
        let line = br#"{"custom_id":"b","response":{"status_code":200,"body":{"model":"gpt-4o","usage":{"input_tokens":10,"output_tokens":4}}},"error":null}"#;
        assert_eq!(parse(Format::OpenAi, line), ok("gpt-4o", 10, 4));
        for not_billed in [
            &br#"{"custom_id":"c","response":{"status_code":400,"body":{"error":{"message":"bad"}}},"error":null}"#[..],
            br#"{"custom_id":"d","response":null,"error":{"code":"batch_expired","message":"expired"}}"#,
            br#"{"custom_id":"e","error":{"code":"x"}}"#,
            b"   ",
        ] {
            assert_eq!(parse(Format::OpenAi, not_billed), Line::NotCharged);
        }
        for unreadable in [
            &b"not json"[..],
            br#"{"custom_id":"f","response":{"status_code":200,"body":{"model":"gpt-4o"}},"error":null}"#,
            br#"{"custom_id":"g","response":{"status_code":200,"body":{"usage":{"prompt_tokens":1}}}}"#,
            br#"{"custom_id":"h","response":{"status_code":200,"body":{"model":"m","usage":{"prompt_tokens":100000000000}}}}"#,
        ] {
            assert_eq!(parse(Format::OpenAi, unreadable), Line::Unreadable);
        }
    }

    #[test]
    fn anthropic_lines() {
        let line = br#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[],"stop_reason":"end_turn","usage":{"input_tokens":100,"cache_read_input_tokens":50,"cache_creation_input_tokens":10,"output_tokens":20}}}}"#;
        assert_eq!(
            parse(Format::Anthropic, line),
            Line::Succeeded {
                model: "claude-sonnet-4-20250514".into(),
                // Anthropic's input excludes the cache: Sluice's includes it.
                usage: Usage {
                    input: 160,
                    cached_input: 50,
                    cache_write: 10,
                    output: 20,
                    ..Usage::default()
                }
            }
        );
        for kind in ["errored", "canceled", "expired"] {
            let line = format!(
                r#"{{"custom_id":"b","result":{{"type":"{kind}","error":{{"type":"invalid_request_error"}}}}}}"#
            );
            assert_eq!(parse(Format::Anthropic, line.as_bytes()), Line::NotCharged);
        }
        assert_eq!(
            parse(Format::Anthropic, br#"{"custom_id":"c"}"#),
            Line::Unreadable
        );
        // An OpenAI line is not an Anthropic one.
        assert_eq!(
            parse(
                Format::Anthropic,
                br#"{"response":{"status_code":200,"body":{"model":"m","usage":{}}}}"#
            ),
            Line::Unreadable
        );
    }
}

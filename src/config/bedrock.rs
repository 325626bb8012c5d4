//! `kind = "bedrock"`: the AWS region, and the AWS credentials read from
//! the environment when the config is loaded (like every provider's key).

use super::raw::RawProvider;
use super::{ProviderKind, Validator};

/// Where AWS credentials come from when a provider names no variables.
pub const DEFAULT_ACCESS_KEY_ID_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const DEFAULT_SECRET_ACCESS_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const DEFAULT_SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";

/// An AWS Bedrock provider's settings.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// The AWS region (`us-east-1`): in the default URL and the signature.
    pub region: String,
    /// The variables the credentials come from (named in errors).
    pub access_key_id_env: String,
    pub secret_access_key_env: String,
    pub session_token_env: String,
    /// `None` when the key id or the secret is not set (requests then fail
    /// with `provider_key_missing`, as for a provider without its key).
    pub keys: Option<AwsKeys>,
    /// Which of Bedrock's runtime APIs the provider's requests use.
    pub api: BedrockApi,
}

/// Bedrock's two runtime APIs: `InvokeModel` takes each model family's own
/// body (Sluice sends Anthropic's, so only Claude models), `Converse` one
/// body for every family (Claude, Llama, Mistral, Nova, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BedrockApi {
    #[default]
    Invoke,
    Converse,
}

impl BedrockApi {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoke => "invoke",
            Self::Converse => "converse",
        }
    }
}

/// AWS credentials, as read from the environment.
#[derive(Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl BedrockConfig {
    /// The Bedrock runtime endpoint of the region.
    pub fn default_url(&self) -> String {
        format!("https://bedrock-runtime.{}.amazonaws.com", self.region)
    }
}

/// The AWS fields of a provider that is not kind `bedrock`.
const AWS_FIELDS: [&str; 5] = [
    "region",
    "aws_access_key_id_env",
    "aws_secret_access_key_env",
    "aws_session_token_env",
    "bedrock_api",
];

impl Validator<'_> {
    /// The Bedrock settings of provider `field` (`None` for other kinds,
    /// whose AWS fields are refused).
    pub(super) fn bedrock(
        &mut self,
        field: &str,
        p: &RawProvider,
        kind: ProviderKind,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<BedrockConfig> {
        let given = [
            &p.region,
            &p.aws_access_key_id_env,
            &p.aws_secret_access_key_env,
            &p.aws_session_token_env,
            &p.bedrock_api,
        ];
        if kind != ProviderKind::Bedrock {
            for (name, v) in AWS_FIELDS.iter().zip(given) {
                if v.is_some() {
                    self.err(&format!("{field}.{name}"), "only for kind bedrock");
                }
            }
            return None;
        }
        if p.api_key_env.is_some() {
            self.err(
                &format!("{field}.api_key_env"),
                "kind bedrock signs with AWS credentials (aws_access_key_id_env, \
                 aws_secret_access_key_env, aws_session_token_env)",
            );
        }
        if p.client_keys == Some(true) {
            self.err(
                &format!("{field}.client_keys"),
                "a client's own key is no AWS credential",
            );
        }
        let Some(region) = &p.region else {
            self.err(
                &format!("{field}.region"),
                "required for kind bedrock (such as us-east-1)",
            );
            return None;
        };
        let ok = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.err(
                &format!("{field}.region"),
                format!("{region:?} is not an AWS region such as us-east-1"),
            );
            return None;
        }
        let api = match p.bedrock_api.as_deref() {
            None | Some("invoke") => BedrockApi::Invoke,
            Some("converse") => BedrockApi::Converse,
            Some(other) => {
                self.err(
                    &format!("{field}.bedrock_api"),
                    format!("unknown API {other:?} (expected invoke|converse)"),
                );
                return None;
            }
        };
        let name = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
        let access_key_id_env = name(&p.aws_access_key_id_env, DEFAULT_ACCESS_KEY_ID_ENV);
        let secret_access_key_env =
            name(&p.aws_secret_access_key_env, DEFAULT_SECRET_ACCESS_KEY_ENV);
        let session_token_env = name(&p.aws_session_token_env, DEFAULT_SESSION_TOKEN_ENV);
        let read = |n: &str| env(n).filter(|v| !v.is_empty());
        let keys = match (read(&access_key_id_env), read(&secret_access_key_env)) {
            (Some(access_key_id), Some(secret_access_key)) => Some(AwsKeys {
                access_key_id,
                secret_access_key,
                session_token: read(&session_token_env),
            }),
            _ => None,
        };
        Some(BedrockConfig {
            region: region.clone(),
            access_key_id_env,
            secret_access_key_env,
            session_token_env,
            keys,
            api,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(kind: &str, fields: &str) -> Result<Config, String> {
        let text = format!(
            "[[providers]]\nname = \"br\"\nkind = \"{kind}\"\n{fields}\n\
             [[models]]\nname = \"*\"\nprovider = \"br\"\n"
        );
        Config::parse(&text, "t.toml", &|_: &str| None).map_err(|e| e.to_string())
    }

    fn api(fields: &str) -> BedrockApi {
        let c = parse("bedrock", fields).expect("valid");
        c.providers[0].bedrock.as_ref().expect("bedrock").api
    }

    #[test]
    fn bedrock_api_picks_invoke_or_converse_and_nothing_else() {
        assert_eq!(api("region = \"us-east-1\""), BedrockApi::Invoke);
        let invoke = "region = \"us-east-1\"\nbedrock_api = \"invoke\"";
        assert_eq!(api(invoke), BedrockApi::Invoke);
        let converse = "region = \"us-east-1\"\nbedrock_api = \"converse\"";
        assert_eq!(api(converse), BedrockApi::Converse);
        let err = parse(
            "bedrock",
            "region = \"us-east-1\"\nbedrock_api = \"Converse\"",
        )
        .expect_err("case matters");
        assert!(
            err.contains(
                "providers[0].bedrock_api: unknown API \"Converse\" (expected invoke|converse)"
            ),
            "{err}"
        );
        let err = parse("anthropic", "bedrock_api = \"converse\"").expect_err("not bedrock");
        assert!(
            err.contains("providers[0].bedrock_api: only for kind bedrock"),
            "{err}"
        );
    }
}

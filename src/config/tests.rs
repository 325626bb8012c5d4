use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-test".into()),
        "ADMIN" => Some("secret".into()),
        _ => None,
    }
}

#[test]
fn shipped_config_is_valid() {
    let text = include_str!("../../proxy.toml");
    let c = Config::parse(text, "proxy.toml", &env).expect("valid");
    assert_eq!(c.server.listen.port(), 8080);
    assert!(c.server.passthrough_keys);
    assert_eq!(c.providers.len(), 2);
    assert_eq!(c.providers[0].api_key.as_deref(), Some("sk-test"));
    assert_eq!(c.providers[1].api_key, None);
    assert_eq!(c.models[0].pattern, "claude-*");
}

#[test]
fn every_error_is_listed_with_its_field() {
    let text = r#"
[server]
listen = "nope"
max_body = "12 parsecs"
[[providers]]
name = "a"
kind = "grpc"
[[providers]]
name = "b"
kind = "openai-compatible"
[[models]]
name = "m"
provider = "zzz"
[[keys]]
sha256 = "xyz"
"#;
    let err = Config::parse(text, "t.toml", &env).expect_err("invalid");
    let all = err.to_string();
    assert!(
        all.contains("t.toml: server.listen: invalid socket address"),
        "{all}"
    );
    assert!(all.contains("server.max_body: unknown size unit"), "{all}");
    assert!(
        all.contains("providers[0].kind: unknown kind \"grpc\""),
        "{all}"
    );
    assert!(all.contains("providers[1].base_url: required"), "{all}");
    assert!(
        all.contains("models[0].provider: unknown provider \"zzz\""),
        "{all}"
    );
    assert!(all.contains("keys[0].sha256: expected 64 hex"), "{all}");
    assert_eq!(err.errors.len(), 6, "{all}");
}

#[test]
fn unknown_fields_are_named() {
    let err = Config::parse("[server]\nlisten_addr = \"x\"\n", "t.toml", &env).expect_err("bad");
    assert!(err.to_string().contains("server"), "{err}");
    assert!(err.to_string().contains("listen_addr"), "{err}");
}

#[test]
fn provider_timeouts_inherit_defaults() {
    let text = r#"
[timeouts]
connect = "1s"
[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1/"
[providers.timeouts]
idle = "2s"
"#;
    let c = Config::parse(text, "t.toml", &env).expect("valid");
    let t = c.providers[0].timeouts;
    assert_eq!(t.connect, Duration::from_secs(1));
    assert_eq!(t.idle, Duration::from_secs(2));
    assert_eq!(t.first_byte, Timeouts::default().first_byte);
    assert_eq!(c.providers[0].base_url.path(), "/v1");
}

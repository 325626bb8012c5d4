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

#[test]
fn budgets_need_prices_for_the_models_they_cover() {
    let base = r#"
[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
[[models]]
name = "in-house"
provider = "p"
[[models]]
name = "gpt-4o"
provider = "p"
"#;
    let all = format!("{base}[[budgets]]\nwindow = \"day\"\nlimit_usd = 1.0\n");
    let err = Config::parse(&all, "t.toml", &env).expect_err("unpriced");
    assert!(
        err.to_string().contains("no price for \"in-house\""),
        "{err}"
    );
    assert_eq!(err.errors.len(), 1, "gpt-4o has a shipped price: {err}");
    let filtered =
        format!("{base}[[budgets]]\nwindow = \"day\"\nlimit_usd = 1.0\nmodels = [\"gpt-*\"]\n");
    assert!(Config::parse(&filtered, "t.toml", &env).is_ok());
    let priced = format!("{all}[[pricing]]\nmodel = \"in-house\"\ninput = 0.1\noutput = 0.1\n");
    assert!(Config::parse(&priced, "t.toml", &env).is_ok());
    let bad =
        format!("{base}[[budgets]]\nwindow = \"dayly\"\nlimit_usd = 1.0\nmodels = [\"gpt-*\"]\n");
    let err = Config::parse(&bad, "t.toml", &env).expect_err("window");
    assert!(
        err.to_string().contains(
            "budgets[0].window: unknown window \"dayly\" (expected hour|day|week|month|lifetime)"
        ),
        "{err}"
    );
}

#[test]
fn missing_tls_files_are_named() {
    let text =
        "[server]\ntls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }\n";
    let err = Config::parse(text, "t.toml", &env).expect_err("missing files");
    assert!(
        err.to_string()
            .contains("server.tls.cert: /nonexistent/cert.pem does not exist"),
        "{err}"
    );
    assert_eq!(err.errors.len(), 2);
}

#[test]
fn state_bounds_and_probe_interval() {
    let c = Config::parse(
        "[state]\nmax_buckets = 42\n[circuit_breaker]\nprobe_interval = \"250ms\"\n",
        "proxy.toml",
        &env,
    )
    .expect("valid");
    assert_eq!(c.max_buckets, 42);
    assert_eq!(
        c.breaker.probe_interval,
        std::time::Duration::from_millis(250)
    );
    let d = Config::parse("", "proxy.toml", &env).expect("valid");
    assert_eq!(d.max_buckets, DEFAULT_MAX_BUCKETS);
    assert_eq!(d.breaker.probe_interval, std::time::Duration::from_secs(1));
    let err = Config::parse(
        "[state]\nmax_buckets = 0\n[circuit_breaker]\nprobe_interval = \"soon\"\n",
        "proxy.toml",
        &env,
    )
    .expect_err("invalid");
    let all = err.to_string();
    assert!(all.contains("state.max_buckets"), "{all}");
    assert!(all.contains("circuit_breaker.probe_interval"), "{all}");
}

#[test]
fn redis_state_is_validated_and_its_password_stays_out_of_debug() {
    let c = Config::parse(
        "[state]\nbackend = \"redis\"\nurl_env = \"REDIS_URL\"\ntimeout = \"20ms\"\n\
         on_unavailable = \"fail_open\"\nfail_open_share = 0.25\n",
        "proxy.toml",
        &|name| (name == "REDIS_URL").then(|| "rediss://u:hunter2@redis:6380/1".to_owned()),
    )
    .expect("valid");
    let r = c.redis.as_ref().expect("redis");
    assert_eq!(r.url, "rediss://u:hunter2@redis:6380/1");
    assert_eq!(r.key_prefix, "sluice:");
    assert_eq!(r.timeout, std::time::Duration::from_millis(20));
    assert_eq!(r.on_unavailable, OnUnavailable::FailOpen);
    assert_eq!(r.fail_open_share, 250);
    assert!(!format!("{r:?}").contains("hunter2"));
    let d = Config::parse(
        "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n",
        "proxy.toml",
        &env,
    )
    .expect("valid");
    let r = d.redis.as_ref().expect("redis");
    assert_eq!(r.on_unavailable, OnUnavailable::FailClosed);
    assert_eq!(r.timeout, std::time::Duration::from_millis(50));

    let err = Config::parse(
        "[state]\nbackend = \"redis\"\nurl = \"http://x\"\nurl_env = \"NOPE\"\n\
         on_unavailable = \"maybe\"\nfail_open_share = 1.5\ntimeout = \"0s\"\n",
        "proxy.toml",
        &env,
    )
    .expect_err("invalid");
    let all = err.to_string();
    for field in [
        "state.url",
        "state.on_unavailable",
        "state.fail_open_share",
        "state.timeout",
    ] {
        assert!(all.contains(field), "{field} in {all}");
    }
    let err =
        Config::parse("[state]\nbackend = \"redis\"\n", "proxy.toml", &env).expect_err("no url");
    assert!(err.to_string().contains("needs url or url_env"), "{err}");
    // Keys that would do nothing without the redis backend are refused.
    let err =
        Config::parse("[state]\nurl = \"redis://x\"\n", "proxy.toml", &env).expect_err("dead key");
    assert!(
        err.to_string()
            .contains("state.url: only applies with backend"),
        "{err}"
    );
}

#[test]
fn overrides_name_one_scope_value_and_only_limits_the_rule_has() {
    let c = Config::parse(
        "[[budgets]]\nname = \"b\"\nscope = [\"team\", \"user\"]\nwindow = \"day\"\nlimit_usd = 5.0\n\
         overrides = { \"team=x|user=big\" = 100.0, \"team=x|user=ops\" = \"unlimited\", \"team=x|user=gone\" = 0 }\n\
         [[rate_limits]]\nname = \"k\"\nscope = [\"key\"]\nrequests_per_minute = 60\nmax_concurrent = 4\n\
         overrides = { \"key=ci\" = { requests_per_minute = 5 }, \"key=batch\" = \"unlimited\" }\n",
        "proxy.toml",
        &env,
    )
    .expect("valid");
    let b = &c.budgets[0];
    assert_eq!(
        b.limit_of_bucket("b|team=x|user=big"),
        Some(100_000_000_000)
    );
    assert_eq!(b.limit_of_bucket("b|team=x|user=ops"), None, "exempt");
    assert_eq!(b.limit_of_bucket("b|team=x|user=gone"), Some(0), "blocked");
    assert_eq!(b.limit_of_bucket("b|team=x|user=else"), Some(5_000_000_000));
    let r = &c.rate_limits[0];
    let ci = r
        .overrides
        .for_bucket("k|key=ci")
        .copied()
        .flatten()
        .expect("ci");
    assert_eq!(ci.requests_per_minute, Some(5));
    assert_eq!(ci.max_concurrent, Some(4), "unset limits keep the rule's");
    assert_eq!(r.overrides.for_bucket("k|key=batch"), Some(&None));

    let err = Config::parse(
        "[[budgets]]\nname = \"b\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 5.0\n\
         overrides = { \"team=x\" = 1.0, \"user=a\" = -1.0, \"user=b\" = \"lots\" }\n\
         [[rate_limits]]\nname = \"k\"\nscope = [\"key\"]\nrequests_per_minute = 60\n\
         overrides = { \"key=ci\" = { tokens_per_minute = 5 } }\n",
        "proxy.toml",
        &env,
    )
    .expect_err("invalid");
    let all = err.to_string();
    assert!(
        all.contains("\"team=x\" does not name one value of this rule's scope"),
        "{all}"
    );
    assert!(all.contains("overrides.\"user=a\""), "{all}");
    assert!(all.contains("overrides.\"user=b\""), "{all}");
    assert!(
        all.contains("overrides.\"key=ci\".tokens_per_minute: the rule sets no such limit"),
        "{all}"
    );
}

const EXPERIMENT_BASE: &str = r#"
[[providers]]
name = "p"
kind = "openai-compatible"
base_url = "http://127.0.0.1:1/v1"
[[models]]
name = "gpt-*"
provider = "p"
[[routing]]
model = "auto"
default = "gpt-4o"
"#;

#[test]
fn experiments_are_validated() {
    let ok = format!(
        "{EXPERIMENT_BASE}{}",
        r#"
[[experiments]]
name = "canary"
model = "agent"
sticky = "header:x-session"
control = "old"
pinned = { "feature=search" = "new" }
[[experiments.arms]]
name = "old"
model = "gpt-4o"
weight = 95
[[experiments.arms]]
name = "new"
model = "gpt-4o-mini"
weight = 5
params = { temperature = 0.2 }
[experiments.ramp]
steps = [1, 5, 25, 100]
min_duration = "10m"
[experiments.guards]
max_error_rate = 0.05
cost_ratio = 1.2
"#
    );
    let c = Config::parse(&ok, "t.toml", &env).expect("valid");
    let e = &c.experiments[0];
    assert_eq!(e.control, 0);
    assert_eq!(e.candidate(), Some(1));
    assert!(matches!(&e.sticky, Sticky::Header(h) if h == "x-session"));
    assert_eq!(e.pinned, vec![(Pin::Feature("search".into()), 1)]);
    assert_eq!(e.ramp.as_ref().map(|r| r.min_samples), Some(500));
    assert_eq!(c.version.len(), 12);

    let bad = format!(
        "{EXPERIMENT_BASE}{}",
        r#"
[[experiments]]
name = "bad name!"
model = "auto"
sticky = "planet"
control = "nobody"
pinned = { "colour=red" = "a" }
[[experiments.arms]]
name = "a"
model = "claude-3"
params = { model = "x", stream = true }
[[experiments.arms]]
name = "a"
model = "gpt-4o"
[[experiments.arms]]
name = "c"
model = "gpt-4o"
[experiments.ramp]
steps = [50, 10]
"#
    );
    let all = Config::parse(&bad, "t.toml", &env)
        .expect_err("invalid")
        .to_string();
    for needle in [
        "experiments[0].name: 1–64 characters",
        "experiments[0].model: \"auto\" is a routing model",
        "experiments[0].arms[0].model: \"claude-3\" matches no [[models]] rule",
        "experiments[0].arms[0].params.model: an arm may not set this field",
        "experiments[0].arms[0].params.stream: an arm may not set this field",
        "experiments[0].arms[1].name: \"a\" used twice",
        "experiments[0].control: no arm named \"nobody\"",
        "experiments[0].sticky: \"planet\" is not",
        "expected \"feature=NAME\" or \"header:NAME=VALUE\"",
        "experiments[0].ramp: a ramp needs exactly two arms",
        "experiments[0].ramp.steps: increasing percentages",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn the_config_version_follows_the_text() {
    let a = Config::parse(EXPERIMENT_BASE, "t.toml", &env).expect("valid");
    let b =
        Config::parse(&format!("{EXPERIMENT_BASE}\n# changed\n"), "t.toml", &env).expect("valid");
    assert_ne!(a.version, b.version);
    assert_eq!(
        a.version,
        Config::parse(EXPERIMENT_BASE, "t.toml", &env)
            .expect("valid")
            .version
    );
}

#[test]
fn shadows_are_validated() {
    let ok = format!(
        "{EXPERIMENT_BASE}{}",
        r#"
[[shadows]]
name = "try-mini"
model = "gpt-4o"
shadow_model = "gpt-4o-mini"
percent = 10
max_usd_per_day = 5.0
"#
    );
    let c = Config::parse(&ok, "t.toml", &env).expect("valid");
    assert_eq!(c.shadows[0].max_in_flight, 16);
    assert_eq!(c.shadows[0].max_per_day, Some(5_000_000_000));
    let bad = format!(
        "{EXPERIMENT_BASE}{}",
        r#"
[[shadows]]
name = "x y"
model = "gpt-4o"
shadow_model = "claude-3"
percent = 150
max_in_flight = 0
"#
    );
    let all = Config::parse(&bad, "t.toml", &env)
        .expect_err("invalid")
        .to_string();
    for needle in [
        "shadows[0].name: 1–64 characters",
        "shadows[0].shadow_model: \"claude-3\" matches no [[models]] rule",
        "shadows[0].percent: from 0 to 100",
        "shadows[0].max_in_flight: from 1 to 256",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn telemetry_is_off_unless_an_endpoint_is_set_and_has_defaults() {
    let c = Config::parse("", "t.toml", &env).expect("valid");
    assert_eq!(c.telemetry, None);
    let c = Config::parse("[telemetry]\nservice_name = \"x\"\n", "t.toml", &env).expect("valid");
    assert_eq!(c.telemetry, None, "no endpoint: off");
    let text = "[telemetry]\notlp_endpoint = \"http://collector:4318/v1/traces\"\n\
                resource_attributes = { team = \"infra\" }\n";
    let t = Config::parse(text, "t.toml", &env)
        .expect("valid")
        .telemetry
        .expect("on");
    assert_eq!(t.service_name, "sluice");
    assert_eq!(t.sampling_ratio, 1.0);
    assert_eq!(t.max_queue_spans, 8192);
    assert_eq!(t.max_export_batch, 512);
    assert_eq!(t.export_interval, Duration::from_secs(5));
    assert_eq!(t.resource_attributes, vec![("team".into(), "infra".into())]);
    let bare = "[telemetry]\notlp_endpoint = \"http://collector:4318/\"\n";
    let t = Config::parse(bare, "t.toml", &env)
        .expect("valid")
        .telemetry;
    assert_eq!(
        t.map(|t| t.otlp_endpoint).as_deref(),
        Some("http://collector:4318/v1/traces")
    );
    let bad =
        "[telemetry]\notlp_endpoint = \"collector:4318\"\nsampling_ratio = -1\ntimeout = \"0s\"\n";
    let e = Config::parse(bad, "t.toml", &env).expect_err("invalid");
    let all = e.errors.join("\n");
    for f in [
        "telemetry.otlp_endpoint",
        "telemetry.sampling_ratio",
        "telemetry.timeout",
    ] {
        assert!(all.contains(f), "{f}: {all}");
    }
}

#[test]
fn a_deployment_kill_switch_must_name_a_provider() {
    let ok = format!(
        "{EXPERIMENT_BASE}{}",
        "\n[[kill_switches]]\ntarget = \"deployment=p/gpt-4o\"\n"
    );
    let c = Config::parse(&ok, "t.toml", &env).expect("valid");
    assert_eq!(c.kill_switches[0].target.provider(), Some("p"));
    let bad = format!(
        "{EXPERIMENT_BASE}{}",
        "\n[[kill_switches]]\ntarget = \"deployment=nowhere\"\n"
    );
    let all = Config::parse(&bad, "t.toml", &env)
        .expect_err("invalid")
        .to_string();
    assert!(
        all.contains("kill_switches[0].target: no provider named \"nowhere\""),
        "{all}"
    );
}

#[test]
fn a_bad_pricing_entry_is_named() {
    let bad = format!(
        "{EXPERIMENT_BASE}{}",
        "\n[[pricing]]\nmodel = \"m\"\ninput = 1.0\noutput = 2.0\nbatch = 1.5\n"
    );
    let all = Config::parse(&bad, "t.toml", &env)
        .expect_err("invalid")
        .to_string();
    assert!(all.contains("pricing[0]: batch"), "{all}");
}

#[test]
fn an_azure_provider_takes_an_api_version_and_others_do_not() {
    let text = |kind: &str, version: &str| {
        format!(
            "[[providers]]\nname = \"az\"\nkind = \"{kind}\"\nbase_url = \"https://x.openai.azure.com\"\n{version}\n[[models]]\nname = \"*\"\nprovider = \"az\"\n"
        )
    };
    let c = Config::parse(&text("azure", ""), "t.toml", &env).expect("valid");
    assert_eq!(c.providers[0].api_version.as_deref(), Some("2024-10-21"));
    let c = Config::parse(
        &text("azure", "api_version = \"2025-01-01-preview\""),
        "t.toml",
        &env,
    )
    .expect("valid");
    assert_eq!(
        c.providers[0].api_version.as_deref(),
        Some("2025-01-01-preview")
    );
    for (kind, version, needle) in [
        (
            "azure",
            "api_version = \"x&y\"",
            "providers[0].api_version: \"x&y\" is not",
        ),
        (
            "openai",
            "api_version = \"2024-10-21\"",
            "providers[0].api_version: only for kind azure",
        ),
    ] {
        let all = Config::parse(&text(kind, version), "t.toml", &env)
            .expect_err("invalid")
            .to_string();
        assert!(all.contains(needle), "{all}");
    }
    let all = Config::parse(
        "[[providers]]\nname = \"az\"\nkind = \"azure\"\n",
        "t.toml",
        &env,
    )
    .expect_err("no url")
    .to_string();
    assert!(all.contains("base_url: required for kind azure"), "{all}");
}

#[test]
fn a_bedrock_provider_takes_a_region_and_aws_credentials_from_the_environment() {
    let text = |fields: &str| {
        format!(
            "[[providers]]\nname = \"br\"\nkind = \"bedrock\"\n{fields}\n[[models]]\nname = \"*\"\nprovider = \"br\"\n"
        )
    };
    let aws = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        "MY_TOKEN" => Some("token".into()),
        _ => None,
    };
    let c = Config::parse(&text("region = \"eu-west-3\""), "t.toml", &aws).expect("valid");
    let p = &c.providers[0];
    assert_eq!(
        p.base_url.host(),
        Some("bedrock-runtime.eu-west-3.amazonaws.com")
    );
    assert!(!p.client_keys);
    let b = p.bedrock.as_ref().expect("bedrock");
    let keys = b.keys.as_ref().expect("keys");
    assert_eq!(
        (keys.access_key_id.as_str(), keys.session_token.as_deref()),
        ("AKID", None)
    );
    assert!(
        !format!("{c:?}").contains("secret\""),
        "the secret is redacted"
    );
    let c = Config::parse(
        &text("region = \"us-east-1\"\naws_session_token_env = \"MY_TOKEN\"\nbase_url = \"http://127.0.0.1:9\""),
        "t.toml",
        &aws,
    )
    .expect("valid");
    let b = c.providers[0].bedrock.as_ref().expect("bedrock");
    assert_eq!(
        b.keys.as_ref().and_then(|k| k.session_token.as_deref()),
        Some("token")
    );
    assert_eq!(c.providers[0].base_url.port_u16(), Some(9));
    // Without credentials the config loads; requests name the variables.
    let c = Config::parse(&text("region = \"us-east-1\""), "t.toml", &env).expect("valid");
    assert!(c.providers[0]
        .bedrock
        .as_ref()
        .is_some_and(|b| b.keys.is_none()));
    for (fields, needle) in [
        ("", "providers[0].region: required for kind bedrock"),
        (
            "region = \"US East\"",
            "providers[0].region: \"US East\" is not an AWS region",
        ),
        (
            "region = \"us-east-1\"\napi_key_env = \"K\"",
            "providers[0].api_key_env: kind bedrock signs with AWS credentials",
        ),
        (
            "region = \"us-east-1\"\nclient_keys = true",
            "providers[0].client_keys: a client's own key is no AWS credential",
        ),
    ] {
        let all = Config::parse(&text(fields), "t.toml", &aws)
            .expect_err(fields)
            .to_string();
        assert!(all.contains(needle), "{all}");
    }
    let all = Config::parse(
        "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nregion = \"us-east-1\"\n",
        "t.toml",
        &env,
    )
    .expect_err("region on anthropic")
    .to_string();
    assert!(
        all.contains("providers[0].region: only for kind bedrock"),
        "{all}"
    );
}

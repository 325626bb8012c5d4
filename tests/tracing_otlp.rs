//! OpenTelemetry traces through the real binary: an in-test OTLP/HTTP
//! receiver decodes what Sluice exports (protobuf), the mock provider
//! records the `traceparent` each attempt sent upstream.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use harness::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::{json, Value};
use sluice_mock::{Fault, MockProvider};

/// One exported span, flattened (ids in hex).
#[derive(Debug, Clone)]
struct Got {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: HashMap<String, Any>,
    resource: HashMap<String, Any>,
}

impl Got {
    fn str(&self, k: &str) -> Option<&str> {
        match self.attrs.get(k)? {
            Any::StringValue(s) => Some(s),
            _ => None,
        }
    }
    fn int(&self, k: &str) -> Option<i64> {
        match self.attrs.get(k)? {
            Any::IntValue(n) => Some(*n),
            _ => None,
        }
    }
    fn strs(&self, k: &str) -> Vec<&str> {
        match self.attrs.get(k) {
            Some(Any::ArrayValue(a)) => a
                .values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(Any::StringValue(s)) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
    fn bool(&self, k: &str) -> Option<bool> {
        match self.attrs.get(k)? {
            Any::BoolValue(b) => Some(*b),
            _ => None,
        }
    }
}

fn map(kvs: &[KeyValue]) -> HashMap<String, Any> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

/// A minimal OTLP/HTTP traces receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| receive(req, store.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().expect("lock").clone()
    }

    /// The spans of one trace, once `n` of them have arrived (up to 10 s).
    async fn wait_trace(&self, trace_id: &str, n: usize) -> Vec<Got> {
        for _ in 0..200 {
            let got: Vec<Got> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "trace {trace_id}: expected {n} spans, have {:#?}",
            self.spans()
        );
    }
}

async fn receive(
    req: Request<Incoming>,
    store: Arc<Mutex<Vec<Got>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let ok = req.method() == http::Method::POST
        && req.uri().path() == "/v1/traces"
        && req.headers()["content-type"] == "application/x-protobuf";
    let body = req.into_body().collect().await?.to_bytes();
    if !ok {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(r);
    }
    let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut out = store.lock().expect("lock");
    for rs in export.resource_spans {
        let resource = rs.resource.map(|r| map(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Got {
                    name: s.name,
                    kind: s.kind,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    attrs: map(&s.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: full success.
    let mut r = Response::new(Full::new(Bytes::new()));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(r)
}

fn telemetry(endpoint: &str, extra: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"sluice-test\"\n\
         resource_attributes = {{ \"deployment.environment\" = \"test\" }}\n{extra}\n\
         [retry]\nbase_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n"
    )
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 50,
           "messages": [{"role": "user", "content": "hello tracing world"}]})
}

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;

/// The trace id and parent span id a `traceparent` names.
fn traceparent_ids(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

#[tokio::test]
async fn a_client_trace_is_continued_with_genai_attributes() {
    let recv = Receiver::start().await;
    let mock = MockProvider::start().await.expect("mock");
    let extra = telemetry(&recv.endpoint(), "export_interval = \"50ms\"");
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    let (st, h, b) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", &tp)],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let rec = s.usage_for(&id).await;
    assert_eq!(rec["trace_id"], trace);

    let spans = recv.wait_trace(trace, 2).await;
    let req = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("request span");
    let att = spans
        .iter()
        .find(|s| s.name == "attempt")
        .expect("attempt span");
    // The request span continues the client's trace; the attempt is its child.
    assert_eq!(req.parent, parent);
    assert_eq!(req.kind, SPAN_KIND_SERVER);
    assert_eq!(att.parent, req.span_id);
    assert_eq!(att.kind, SPAN_KIND_CLIENT);
    // Upstream saw the attempt span as its parent, in the same trace.
    let upstream_tp = mock.last_request().expect("upstream request");
    let upstream_tp = upstream_tp
        .header("traceparent")
        .expect("traceparent upstream");
    assert_eq!(
        traceparent_ids(upstream_tp),
        (trace.to_owned(), att.span_id.clone(), "01".to_owned())
    );

    assert_eq!(req.str("sluice.request_id"), Some(id.as_str()));
    assert_eq!(req.str("gen_ai.system"), Some("openai"));
    assert_eq!(req.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(req.str("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(req.str("gen_ai.response.model"), Some("mock-model"));
    assert_eq!(
        req.int("gen_ai.usage.input_tokens"),
        rec["input_tokens"].as_i64()
    );
    assert_eq!(
        req.int("gen_ai.usage.output_tokens"),
        rec["output_tokens"].as_i64()
    );
    assert!(req.int("gen_ai.usage.output_tokens").unwrap_or(0) > 0);
    // The usage record's finish reason.
    assert_eq!(req.strs("gen_ai.response.finish_reasons"), ["stop"]);
    assert_eq!(rec["finish_reason"], "stop");
    assert_eq!(req.int("http.response.status_code"), Some(200));
    assert_eq!(req.str("http.request.method"), Some("POST"));
    assert_eq!(req.str("sluice.provider"), Some("mock-openai"));
    assert_eq!(req.int("sluice.attempts"), Some(1));
    assert_eq!(req.str("sluice.cache"), rec["cache"].as_str());
    assert_eq!(req.bool("sluice.stream"), Some(false));
    assert_eq!(req.str("sluice.error"), None);
    assert_eq!(att.str("sluice.deployment"), Some("mock-openai/mock-model"));
    assert_eq!(att.int("http.response.status_code"), Some(200));
    assert_eq!(att.str("sluice.attempt.outcome"), Some("ok"));
    assert_eq!(att.str("sluice.retry.reason"), None);
    match req.resource.get("service.name") {
        Some(Any::StringValue(n)) => assert_eq!(n, "sluice-test"),
        other => panic!("service.name: {other:?}"),
    }
    match req.resource.get("deployment.environment") {
        Some(Any::StringValue(n)) => assert_eq!(n, "test"),
        other => panic!("deployment.environment: {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn a_retried_stream_has_one_span_per_attempt_under_a_new_trace() {
    let recv = Receiver::start().await;
    let mock = MockProvider::start().await.expect("mock");
    let extra = telemetry(&recv.endpoint(), "export_interval = \"50ms\"");
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;

    mock.push_fault(Fault::Status {
        status: 503,
        body: String::new(),
        retry_after: None,
    });
    let (st, h, b) = post(
        &s,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &chat("claude-mock-haiku", true),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b:?}");
    assert_eq!(h["x-sluice-attempts"], "2");
    let id = h["x-sluice-request-id"].to_str().expect("id").to_owned();
    let rec = s.usage_for(&id).await;
    let trace = rec["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(trace.len(), 32);

    let spans = recv.wait_trace(&trace, 3).await;
    let req = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("request span");
    // No client traceparent: a new root.
    assert_eq!(req.parent, "");
    let mut attempts: Vec<&Got> = spans.iter().filter(|s| s.name == "attempt").collect();
    attempts.sort_by_key(|a| a.int("sluice.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for a in &attempts {
        assert_eq!(a.parent, req.span_id);
        assert_eq!(a.str("gen_ai.system"), Some("anthropic"));
        assert_eq!(a.str("sluice.provider"), Some("mock-anthropic"));
    }
    assert_eq!(attempts[0].int("http.response.status_code"), Some(503));
    assert_eq!(attempts[0].str("sluice.attempt.outcome"), Some("retryable"));
    assert_eq!(attempts[1].str("sluice.retry.reason"), Some("status 503"));
    assert_eq!(attempts[1].str("sluice.attempt.outcome"), Some("ok"));

    // Each upstream request named its own attempt span.
    let sent: Vec<(String, String, String)> = mock
        .requests()
        .iter()
        .map(|r| traceparent_ids(r.header("traceparent").expect("traceparent upstream")))
        .collect();
    assert_eq!(
        sent,
        attempts
            .iter()
            .map(|a| (trace.clone(), a.span_id.clone(), "01".to_owned()))
            .collect::<Vec<_>>()
    );

    assert_eq!(req.str("gen_ai.system"), Some("anthropic"));
    assert_eq!(req.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(req.int("sluice.attempts"), Some(2));
    assert_eq!(req.bool("sluice.stream"), Some(true));
    assert_eq!(req.str("sluice.end"), Some("complete"));
    assert_eq!(
        req.int("gen_ai.usage.output_tokens"),
        rec["output_tokens"].as_i64()
    );
    assert!(req.int("gen_ai.usage.output_tokens").unwrap_or(0) > 0);
    assert_eq!(req.strs("gen_ai.response.finish_reasons"), ["end_turn"]);
    s.stop().await;
}

/// With `sampling_ratio = 0` only a sampled client parent is recorded; an
/// unsampled one still propagates. The export interval is long, so what
/// arrives was sent by the flush at SIGTERM.
#[tokio::test]
async fn sampling_follows_the_parent_and_shutdown_flushes() {
    let recv = Receiver::start().await;
    let mock = MockProvider::start().await.expect("mock");
    let extra = telemetry(
        &recv.endpoint(),
        "sampling_ratio = 0.0\nexport_interval = \"1h\"",
    );
    let s = Sluice::start(&config(&mock.url(), "", &extra)).await;

    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{unsampled}-b7ad6b7169203331-00");
    let (st, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", &tp)],
        &chat("gpt-4o-mini", true),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["trace_id"], unsampled);
    let up = mock.last_request().expect("upstream request");
    let (t, span, flags) = traceparent_ids(up.header("traceparent").expect("traceparent"));
    assert_eq!((t.as_str(), flags.as_str()), (unsampled, "00"));
    assert_ne!(
        span, "b7ad6b7169203331",
        "the attempt's own span id goes upstream"
    );

    // No parent at all, ratio 0: not recorded either.
    let (st, _, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", false)).await;
    assert_eq!(st, StatusCode::OK);

    let sampled = "11111111111111111111111111111111";
    let tp = format!("00-{sampled}-2222222222222222-01");
    let (st, _, _) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", &tp)],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    s.wait_usage(3).await;

    let (status, _) = s.stop().await;
    assert!(status.success());
    let spans = recv.spans();
    assert_eq!(
        spans.len(),
        2,
        "only the sampled parent's trace: {spans:#?}"
    );
    assert!(spans.iter().all(|s| s.trace_id == sampled));
}

#[tokio::test]
async fn with_tracing_off_the_client_trace_id_is_recorded_and_passed_on() {
    let mock = MockProvider::start().await.expect("mock");
    let s = Sluice::start(&config(&mock.url(), "", "")).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (st, h, _) = post(
        &s,
        "/v1/chat/completions",
        &[("traceparent", tp)],
        &chat("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let up = mock.last_request().expect("upstream request");
    assert_eq!(up.header("traceparent"), Some(tp));

    // No traceparent: no trace id.
    let (_, h, _) = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini", false)).await;
    let rec = s
        .usage_for(h["x-sluice-request-id"].to_str().expect("id"))
        .await;
    assert_eq!(rec["trace_id"], Value::Null);
    s.stop().await;
}

#[tokio::test]
async fn check_rejects_a_bad_telemetry_section() {
    let dir = temp_dir();
    let path = dir.join("proxy.toml");
    let cfg = config(
        "http://127.0.0.1:1",
        "",
        "[telemetry]\notlp_endpoint = \"localhost:4318\"\nsampling_ratio = 1.5\nmax_queue_spans = 0\nbogus = 1\n",
    );
    std::fs::write(
        &path,
        cfg.replace("USAGE_PATH", "off")
            .replace("STATE_PATH", &dir.join("s").display().to_string()),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Unknown keys are refused first (the file does not parse).
    assert!(err.contains("bogus"), "{err}");

    let cfg = cfg.replace("bogus = 1\n", "");
    std::fs::write(
        &path,
        cfg.replace("USAGE_PATH", "off")
            .replace("STATE_PATH", &dir.join("s").display().to_string()),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for field in [
        "telemetry.otlp_endpoint",
        "telemetry.sampling_ratio",
        "telemetry.max_queue_spans",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
}

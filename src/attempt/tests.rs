//! The attempt loop's sequencing, on a paused clock with a scripted
//! transport: no sockets and no real sleeps, so every wait is asserted
//! exactly (tokio auto-advances the paused clock to the next timer).

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::FutureExt as _;
use http::header::AUTHORIZATION;

use super::*;
use crate::config::Config;

/// What a scripted provider does with one request.
#[derive(Debug, Clone)]
enum Step {
    /// Answers with this status, headers and body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    },
    /// The connection is refused.
    Refused,
    /// The client's own connect timeout fires.
    ConnectTimeout,
    /// Never answers.
    Hang,
}

fn status(code: u16) -> Step {
    Step::Answer {
        status: code,
        headers: Vec::new(),
        body: "{}",
    }
}

fn status_with(code: u16, headers: &[(&'static str, &'static str)]) -> Step {
    Step::Answer {
        status: code,
        headers: headers.to_vec(),
        body: "{}",
    }
}

/// One request the transport saw.
#[derive(Debug)]
struct Sent {
    provider: usize,
    at: Instant,
    /// The model the body named.
    model: String,
}

/// A transport that plays a script per provider (a provider with nothing
/// left to play answers 200) and notes what was sent when.
struct Script {
    steps: Mutex<HashMap<usize, VecDeque<Step>>>,
    sent: Mutex<Vec<Sent>>,
    jitter: f64,
}

impl Script {
    fn new() -> Self {
        Script {
            steps: Mutex::default(),
            sent: Mutex::default(),
            jitter: 1.0,
        }
    }

    fn jitter(mut self, j: f64) -> Self {
        self.jitter = j;
        self
    }

    /// Queues `steps` for provider number `provider`.
    fn play(&self, provider: usize, steps: impl IntoIterator<Item = Step>) {
        let mut all = self.steps.lock().expect("lock");
        all.entry(provider).or_default().extend(steps);
    }

    /// Takes what was sent since the last call.
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().expect("lock"))
    }
}

impl Transport for Script {
    type Body = Full<Bytes>;

    fn send(
        &self,
        provider: usize,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<Full<Bytes>>, SendError>> + Send {
        let body = req
            .into_body()
            .collect()
            .now_or_never()
            .expect("a full body is ready")
            .expect("infallible")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json body");
        self.sent.lock().expect("lock").push(Sent {
            provider,
            at: Instant::now(),
            model: json["model"].as_str().unwrap_or_default().to_owned(),
        });
        let step = self
            .steps
            .lock()
            .expect("lock")
            .get_mut(&provider)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| status(200));
        async move {
            match step {
                Step::Answer {
                    status,
                    headers,
                    body,
                } => {
                    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                    for (name, value) in headers {
                        resp.headers_mut()
                            .insert(name, HeaderValue::from_static(value));
                    }
                    Ok(resp)
                }
                Step::Refused => Err(SendError::Connect("connection refused".into())),
                Step::ConnectTimeout => Err(SendError::ConnectTimeout),
                Step::Hang => std::future::pending().await,
            }
        }
    }

    fn jitter(&self) -> f64 {
        self.jitter
    }
}

/// Two providers, `a` (number 0) and `b` (number 1), then `rest`.
fn env(rest: &str) -> Env {
    let text = format!(
        r#"
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[[providers]]
name = "b"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
{rest}
"#
    );
    let cfg = Config::parse(&text, "test.toml", &|_| None).expect("config");
    Env {
        snap: Snapshot::build(cfg).expect("snapshot"),
        registry: Deployments::default(),
        headers: HeaderMap::new(),
        cred: Credential::Passthrough {
            header: AUTHORIZATION,
            value: HeaderValue::from_static("Bearer sk-client"),
        },
        fault: None,
    }
}

struct Env {
    snap: Snapshot,
    registry: Deployments,
    headers: HeaderMap,
    cred: Credential,
    /// An upstream chaos fault for every request.
    fault: Option<crate::fault::Hit>,
}

type Outcome = Result<Answered<Full<Bytes>>, ProxyError>;

impl Env {
    /// A chat request for `model` through its chain, as the pipeline builds it.
    async fn run(&self, script: &Script, model: &str) -> (Outcome, Progress) {
        let route = self
            .snap
            .router
            .resolve(model, ApiShape::OpenAi, &self.snap.upstreams)
            .expect("route");
        let groups: VecDeque<Group> = self
            .snap
            .router
            .chain(route, ApiShape::OpenAi, false, &self.snap.upstreams)
            .into_iter()
            .map(|r| Group {
                candidates: r.candidates(&self.snap.upstreams, &self.registry),
                balance: r.rule.balance,
                tries: 1 + self.snap.config.retry.max_retries,
                context_fallback: r.rule.context_fallback.clone(),
                crossing: None,
            })
            .collect();
        let first = groups[0].candidates[0].provider;
        let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
        let call = Call {
            snap: &self.snap,
            registry: &self.registry,
            method: &Method::POST,
            path_and_query: "/v1/chat/completions",
            client_headers: &self.headers,
            cred: &self.cred,
            body: Bytes::from(body),
            client_model: Some(model),
            endpoint: Endpoint::ChatCompletions,
            shape: ApiShape::OpenAi,
            deadline: Instant::now() + self.snap.upstreams[first].timeouts.total,
            reads_answer: false,
            fault: self.fault.clone(),
            trace: &crate::telemetry::RequestTrace::default(),
            include_usage: false,
        };
        let mut progress = Progress::default();
        let out = run_with(script, &call, groups, &mut progress).await;
        (out, progress)
    }

    fn breaker_open(&self, deployment: &str) -> bool {
        let d = self.registry.find(deployment).expect("deployment");
        d.breaker.is_open(&self.snap.config.breaker, Instant::now())
    }
}

/// The status of an answer that went to the client.
fn answered(out: &Outcome) -> u16 {
    match out {
        Ok(Answered::Stream(r)) => r.status().as_u16(),
        Ok(Answered::Buffered(parts, _)) => parts.status.as_u16(),
        Err(e) => panic!("no answer: {e}"),
    }
}

/// The gaps between consecutive sends.
fn gaps(sent: &[Sent]) -> Vec<Duration> {
    sent.windows(2).map(|w| w[1].at - w[0].at).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn outcomes(p: &Progress) -> Vec<(u16, &'static str)> {
    p.log.iter().map(|a| (a.status, a.outcome)).collect()
}

const SOLO: &str = r#"
[[models]]
name = "solo"
provider = "a"
upstream_model = "a-solo"
"#;

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially() {
    let e = env(&format!(
        "[retry]\nmax_retries = 3\nbase_backoff = \"100ms\"\nmax_backoff = \"5s\"\n{SOLO}"
    ));
    let s = Script::new();
    s.play(0, [status(500), status(503), status(429)]);
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    let sent = s.take();
    assert_eq!(gaps(&sent), [ms(100), ms(200), ms(400)], "base × 2^n");
    assert!(sent.iter().all(|x| x.provider == 0 && x.model == "a-solo"));
    assert_eq!(p.attempts, 4);
    assert_eq!(
        outcomes(&p),
        [
            (500, "retryable"),
            (503, "retryable"),
            (429, "retryable"),
            (200, "ok")
        ]
    );
    assert_eq!((&*p.provider, p.model.as_str()), ("a", "a-solo"));
    assert!(p.inflight.is_some() && !p.awaiting);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_jittered_and_capped() {
    let e = env(&format!(
        "[retry]\nmax_retries = 3\nbase_backoff = \"100ms\"\nmax_backoff = \"250ms\"\n{SOLO}"
    ));
    let s = Script::new().jitter(0.5);
    s.play(0, [status(502), status(502), status(502)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    // Half of 100, 200, and of the 250 ms cap.
    assert_eq!(gaps(&s.take()), [ms(50), ms(100), ms(125)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_its_bound() {
    let e = env(&format!(
        "[retry]\nmax_retries = 3\nmax_retry_after = \"10s\"\n{SOLO}"
    ));
    let s = Script::new();
    s.play(
        0,
        [
            status_with(429, &[("retry-after", "3")]),
            status_with(503, &[("retry-after-ms", "1500")]),
            status_with(429, &[("retry-after", "30")]),
        ],
    );
    let (out, p) = e.run(&s, "solo").await;
    // Past `max_retry_after`: no third retry; the provider's 429 (and its
    // retry-after) goes back to the client.
    let Ok(Answered::Stream(resp)) = &out else {
        panic!("the 429 passes through");
    };
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(gaps(&s.take()), [Duration::from_secs(3), ms(1500)]);
    assert_eq!(p.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_is_not_taken() {
    let e = env(&format!(
        "[timeouts]\ntotal = \"5s\"\n[retry]\nmax_retries = 2\n{SOLO}"
    ));
    let s = Script::new();
    s.play(0, [status_with(503, &[("retry-after", "8")])]);
    let t0 = Instant::now();
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 503);
    assert_eq!(s.take().len(), 1);
    assert_eq!(p.attempts, 1);
    assert_eq!(Instant::now(), t0, "gave up at once, without sleeping");
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_not_retried() {
    let e = env(&format!("[retry]\nmax_retries = 3\n{SOLO}"));
    for code in [400, 401, 403, 404, 413, 422] {
        let s = Script::new();
        s.play(0, [status(code)]);
        let (out, p) = e.run(&s, "solo").await;
        assert_eq!(answered(&out), code);
        assert_eq!(s.take().len(), 1, "{code}");
        assert_eq!(outcomes(&p), [(code, "client_error")]);
    }
    assert!(!e.breaker_open("a/a-solo"), "a 4xx is the client's fault");
}

#[tokio::test(start_paused = true)]
async fn timeouts_fail_with_their_phase() {
    let phase = |out: &Outcome| match out {
        Err(ProxyError::UpstreamTimeout { provider, phase }) => {
            assert_eq!(provider, "a");
            *phase
        }
        Err(e) => panic!("not a timeout: {e}"),
        Ok(_) => panic!("answered"),
    };
    // First byte: the provider's `first_byte` from sending.
    let e = env(&format!(
        "[timeouts]\nfirst_byte = \"2s\"\ntotal = \"60s\"\n[retry]\nmax_retries = 0\n{SOLO}"
    ));
    let s = Script::new();
    s.play(0, [Step::Hang]);
    let t0 = Instant::now();
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(phase(&out), "first byte");
    assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    assert_eq!(outcomes(&p), [(0, "timeout")]);
    assert_eq!(p.wait, Duration::from_secs(2));
    assert!(!p.awaiting && p.inflight.is_none());

    // Connect: the client's own timeout.
    s.play(0, [Step::ConnectTimeout]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(phase(&out), "connect");

    // Total: the request's deadline comes before the first byte's.
    let e = env(&format!(
        "[timeouts]\nfirst_byte = \"30s\"\ntotal = \"5s\"\n[retry]\nmax_retries = 0\n{SOLO}"
    ));
    s.play(0, [Step::Hang]);
    let t0 = Instant::now();
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(phase(&out), "total");
    assert_eq!(Instant::now() - t0, Duration::from_secs(5));

    // A refused connection is a connect error.
    s.play(0, [Step::Refused]);
    let (out, p) = e.run(&s, "solo").await;
    assert!(
        matches!(&out, Err(ProxyError::UpstreamConnect { provider, detail })
            if provider == "a" && detail == "connection refused"),
        "{:?}",
        out.as_ref().err()
    );
    assert_eq!(outcomes(&p), [(0, "connect_error")]);
}

#[tokio::test(start_paused = true)]
async fn transport_failures_are_retried() {
    let e = env(&format!(
        "[timeouts]\nfirst_byte = \"2s\"\n[retry]\nmax_retries = 3\nbase_backoff = \"100ms\"\n{SOLO}"
    ));
    let s = Script::new();
    s.play(0, [Step::Hang, Step::Refused, Step::ConnectTimeout]);
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert_eq!(
        gaps(&s.take()),
        [Duration::from_secs(2) + ms(100), ms(200), ms(400)]
    );
    assert_eq!(
        outcomes(&p),
        [
            (0, "timeout"),
            (0, "connect_error"),
            (0, "timeout"),
            (200, "ok")
        ]
    );
}

const PAIR: &str = r#"
[[models]]
name = "solo"
provider = "a"
upstream_model = "a-solo"
[[models]]
name = "pair"
[[models.deployments]]
provider = "a"
upstream_model = "a-solo"
[[models.deployments]]
provider = "b"
upstream_model = "b-pair"
"#;

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_one_failure_per_request_then_skips_the_deployment() {
    let e = env(&format!(
        "[retry]\nmax_retries = 2\n[circuit_breaker]\nconsecutive_failures = 2\nopen_for = \"30s\"\nprobe_interval = \"1s\"\n{PAIR}"
    ));
    let s = Script::new();
    // Three failed attempts of one request are one failure.
    s.play(0, [status(500), status(500), status(500)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 500);
    assert_eq!(s.take().len(), 3);
    assert!(!e.breaker_open("a/a-solo"));

    // A second request's failure opens it, and its retries stop there: the
    // provider's 500 passes through.
    s.play(0, [status(500)]);
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 500);
    assert_eq!(s.take().len(), 1);
    assert_eq!(p.attempts, 1);
    assert!(e.breaker_open("a/a-solo"));

    // A model with another deployment goes only there while it is open.
    for _ in 0..20 {
        let (out, p) = e.run(&s, "pair").await;
        assert_eq!(answered(&out), 200);
        assert_eq!((&*p.provider, p.model.as_str()), ("b", "b-pair"));
        let sent = s.take();
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].provider, sent[0].model.as_str()), (1, "b-pair"));
    }

    // Every deployment of `solo` is open: one panic probe per interval goes
    // through; a failed one changes nothing, the others get 503 at once.
    s.play(0, [status(500)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 500);
    assert_eq!(s.take().len(), 1);
    let (out, p) = e.run(&s, "solo").await;
    assert!(matches!(out, Err(ProxyError::NoHealthyDeployment)));
    assert_eq!((p.attempts, s.take().len()), (0, 0));
    tokio::time::advance(Duration::from_secs(1)).await;
    // The provider is back: the next probe closes the circuit.
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert!(!e.breaker_open("a/a-solo"));
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_sends_one_probe_after_its_cool_down() {
    let e = env(&format!(
        "[retry]\nmax_retries = 0\n[circuit_breaker]\nconsecutive_failures = 1\nopen_for = \"30s\"\n{PAIR}"
    ));
    let s = Script::new();
    s.play(0, [status(503)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 503);
    assert!(e.breaker_open("a/a-solo"));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(!e.breaker_open("a/a-solo"), "half open: a probe may go");
    // The probe fails: open for another 30 s.
    s.play(0, [status(503)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 503);
    assert!(e.breaker_open("a/a-solo"));
    tokio::time::advance(Duration::from_secs(30)).await;
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert!(!e.breaker_open("a/a-solo"));
    assert_eq!(s.take().len(), 3);
}

const CHAIN: &str = r#"
[[models]]
name = "primary"
provider = "a"
upstream_model = "a-primary"
fallbacks = ["backup"]
context_fallback = "long"
[[models]]
name = "backup"
provider = "b"
upstream_model = "b-backup"
[[models]]
name = "long"
provider = "b"
upstream_model = "b-long"
"#;

#[tokio::test(start_paused = true)]
async fn the_fallback_is_tried_at_once_when_the_model_is_spent() {
    let e = env(&format!(
        "[retry]\nmax_retries = 1\nbase_backoff = \"100ms\"\n{CHAIN}"
    ));
    let s = Script::new();
    s.play(0, [status(503), status(503)]);
    let (out, p) = e.run(&s, "primary").await;
    assert_eq!(answered(&out), 200);
    let sent = s.take();
    let to: Vec<_> = sent
        .iter()
        .map(|x| (x.provider, x.model.as_str()))
        .collect();
    assert_eq!(to, [(0, "a-primary"), (0, "a-primary"), (1, "b-backup")]);
    assert_eq!(gaps(&sent), [ms(100), ms(0)], "no wait before the fallback");
    assert_eq!((&*p.provider, p.model.as_str()), ("b", "b-backup"));
    assert_eq!(p.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_whole_chain() {
    let e = env(&format!(
        "[retry]\nmax_retries = 2\nmax_attempts = 2\n{CHAIN}"
    ));
    let s = Script::new();
    s.play(0, [status(503), status(503), status(503)]);
    let (out, p) = e.run(&s, "primary").await;
    assert_eq!(answered(&out), 503, "the last error passes through");
    assert_eq!(s.take().len(), 2);
    assert_eq!(p.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_context_length_error_switches_to_the_context_fallback() {
    let e = env(&format!("[retry]\nmax_retries = 2\n{CHAIN}"));
    let s = Script::new();
    s.play(
        0,
        [Step::Answer {
            status: 400,
            headers: Vec::new(),
            body: r#"{"error":{"code":"context_length_exceeded"}}"#,
        }],
    );
    let (out, p) = e.run(&s, "primary").await;
    assert_eq!(answered(&out), 200);
    let sent = s.take();
    let to: Vec<_> = sent
        .iter()
        .map(|x| (x.provider, x.model.as_str()))
        .collect();
    assert_eq!(to, [(0, "a-primary"), (1, "b-long")]);
    assert_eq!(gaps(&sent), [ms(0)]);
    assert_eq!(outcomes(&p), [(400, "client_error"), (200, "ok")]);
    assert_eq!(p.model, "b-long");

    // Any other 400 goes back as it came (read, so buffered), once.
    s.play(
        0,
        [Step::Answer {
            status: 400,
            headers: Vec::new(),
            body: r#"{"error":{"code":"invalid_value"}}"#,
        }],
    );
    let (out, _) = e.run(&s, "primary").await;
    let Ok(Answered::Buffered(parts, body)) = out else {
        panic!("buffered 400");
    };
    assert_eq!(parts.status, 400);
    assert_eq!(&body[..], br#"{"error":{"code":"invalid_value"}}"#);
    assert_eq!(s.take().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_is_spent_only_by_retries_that_happen() {
    // One retry per 10 s on a deployment, whatever its traffic.
    let e = env(&format!(
        "[timeouts]\ntotal = \"5s\"\n[retry]\nmax_retries = 1\nbudget_ratio = 0.0\nbudget_min_per_second = 0.1\n{SOLO}"
    ));
    let s = Script::new();
    // A Retry-After past the deadline: no retry, and no budget spent.
    s.play(0, [status_with(429, &[("retry-after", "8")])]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 429);
    assert_eq!(s.take().len(), 1);
    // The one retry of the window…
    s.play(0, [status(500)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert_eq!(s.take().len(), 2);
    // …is spent: the next failure passes through.
    s.play(0, [status(500)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 500);
    assert_eq!(s.take().len(), 1);
    // A window later there is one again.
    tokio::time::advance(Duration::from_secs(10)).await;
    s.play(0, [status(500)]);
    let (out, _) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert_eq!(s.take().len(), 2);
}

fn fault(kind: FaultKind, percent: f64) -> Option<crate::fault::Hit> {
    Some(crate::fault::Hit {
        name: "drill".into(),
        kind,
        percent,
        runtime: false,
    })
}

#[tokio::test(start_paused = true)]
async fn an_injected_upstream_failure_is_handled_like_the_providers_own() {
    let mut e = env(&format!(
        "[retry]\nmax_retries = 2\nbase_backoff = \"100ms\"\nmax_backoff = \"5s\"\n{SOLO}"
    ));
    let s = Script::new();
    // A 503 on every attempt: retried with backoff, never sent, the last one answers.
    let unavailable = FaultKind::Status {
        status: 503,
        retry_after: None,
    };
    e.fault = fault(unavailable, 100.0);
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 503);
    assert!(s.take().is_empty(), "nothing reached the provider");
    assert_eq!(outcomes(&p), [(503, "retryable"); 3]);
    assert_eq!(p.fault.as_deref(), Some("drill"));
    // A reset before the head is a connection error, retried the same way.
    e.fault = fault(FaultKind::Reset { after: 0 }, 100.0);
    let (out, p) = e.run(&s, "solo").await;
    assert!(matches!(out, Err(ProxyError::UpstreamConnect { .. })));
    assert_eq!(outcomes(&p), [(0, "connect_error"); 3]);
    // 0 %: the provider answers.
    e.fault = fault(unavailable, 0.0);
    let (out, p) = e.run(&s, "solo").await;
    assert_eq!(answered(&out), 200);
    assert_eq!(s.take().len(), 1);
    assert_eq!(p.fault, None);

    // A context-length 400 takes the context fallback (whose attempt rolls too).
    let mut e = env(&format!("[retry]\nmax_retries = 2\n{CHAIN}"));
    e.fault = fault(
        FaultKind::Status {
            status: 400,
            retry_after: None,
        },
        100.0,
    );
    let (out, p) = e.run(&s, "primary").await;
    assert_eq!(answered(&out), 400);
    assert_eq!(outcomes(&p), [(400, "client_error"), (400, "client_error")]);
    assert_eq!(p.model, "b-long");
    assert!(s.take().is_empty());
}

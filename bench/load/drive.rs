//! The load generator: one pooled client, N workers per run, per-request samples, CPU and RSS
//! of the processes an arm adds; also the many-streams and soak drivers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::task::JoinSet;

use crate::procfs::{cpu_ticks, fd_count, status_kb};
use crate::report::{machine_info, mb, pct};
use crate::scenarios::{chat_body, headers, Kind, Scenario};
use crate::TIME_CAP;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn self_cpu_ticks() -> u64 {
    cpu_ticks(std::process::id())
}

pub(crate) fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter().map(|p| status_kb(*p, "VmRSS:")).sum()
}

/// Samples RSS of Sluice and nginx every 100 ms, keeping the peaks since the last reset.
pub(crate) struct RssSampler {
    pub(crate) sluice: u32,
    pub(crate) nginx: Vec<u32>,
    pub(crate) sluice_peak: AtomicU64,
    pub(crate) nginx_peak: AtomicU64,
    /// Never reset: Sluice's peak over the whole run (warm-ups included).
    pub(crate) sluice_max: AtomicU64,
}

impl RssSampler {
    pub(crate) fn spawn(sluice: u32, nginx: Vec<u32>) -> Arc<RssSampler> {
        let s = Arc::new(RssSampler {
            sluice,
            nginx,
            sluice_peak: AtomicU64::new(0),
            nginx_peak: AtomicU64::new(0),
            sluice_max: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.sample();
            }
        });
        s
    }

    pub(crate) fn sample(&self) {
        let kb = rss_kb(&[self.sluice]);
        self.sluice_peak.fetch_max(kb, Ordering::Relaxed);
        self.sluice_max.fetch_max(kb, Ordering::Relaxed);
        if !self.nginx.is_empty() {
            self.nginx_peak
                .fetch_max(rss_kb(&self.nginx), Ordering::Relaxed);
        }
    }

    /// (sluice, nginx) peaks in KiB since the last call (which also samples now).
    pub(crate) fn take(&self) -> (u64, u64) {
        self.sample();
        (
            self.sluice_peak.swap(0, Ordering::Relaxed),
            self.nginx_peak.swap(0, Ordering::Relaxed),
        )
    }
}

/// Raw measurements of one worker, merged per run.
#[derive(Default)]
pub(crate) struct Samples {
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) non200: usize,
    pub(crate) incomplete: usize,
    pub(crate) lat: Vec<u64>,
    pub(crate) ttfb: Vec<u64>,
    pub(crate) gaps: Vec<u64>,
    pub(crate) frames: u64,
    pub(crate) bytes: u64,
    pub(crate) first_errors: Vec<String>,
    /// `x-sluice-*` headers of the first successful response, for the report.
    pub(crate) first_headers: Option<String>,
}

impl Samples {
    pub(crate) fn note(&mut self, e: String) {
        if self.first_errors.len() < 3 {
            self.first_errors.push(e);
        }
    }

    pub(crate) fn merge(&mut self, o: Samples) {
        self.ok += o.ok;
        self.errors += o.errors;
        self.non200 += o.non200;
        self.incomplete += o.incomplete;
        self.lat.extend(o.lat);
        self.ttfb.extend(o.ttfb);
        self.gaps.extend(o.gaps);
        self.frames += o.frames;
        self.bytes += o.bytes;
        for e in o.first_errors {
            self.note(e);
        }
        if self.first_headers.is_none() {
            self.first_headers = o.first_headers;
        }
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One request: whole-response latency, time to the first body frame, frame gaps.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn one_request(
    client: &HttpClient,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    stream: bool,
    gaps: bool,
    expect: Option<(&str, &str)>,
    s: &mut Samples,
) {
    let mut req = Request::new(Full::new(body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers.clone();
    let t0 = Instant::now();
    let resp = match client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            s.errors += 1;
            s.note(format!("request: {e:?}"));
            return;
        }
    };
    let status = resp.status();
    let sluice_headers = |h: &HeaderMap| -> String {
        let mut v: Vec<String> = h
            .iter()
            .filter(|(k, _)| {
                k.as_str().starts_with("x-sluice-") && k.as_str() != "x-sluice-request-id"
            })
            .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
            .collect();
        v.sort();
        v.join(", ")
    };
    let expect_failed = expect.and_then(|(name, want)| {
        let got = resp.headers().get(name).and_then(|v| v.to_str().ok());
        (got != Some(want)).then(|| format!("{name}: {got:?}, want {want:?}"))
    });
    if s.first_headers.is_none() && status == StatusCode::OK {
        s.first_headers = Some(sluice_headers(resp.headers()));
    }
    let mut body = resp.into_body();
    let mut first: Option<Instant> = None;
    let mut last = t0;
    let mut tail: Vec<u8> = Vec::new();
    let mut bytes = 0u64;
    let mut frames = 0u64;
    let mut gap_buf: Vec<u64> = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                let Ok(data) = f.into_data() else { continue };
                let now = Instant::now();
                match first {
                    None => first = Some(now),
                    Some(_) if gaps => gap_buf.push(micros(now - last)),
                    Some(_) => {}
                }
                last = now;
                bytes += data.len() as u64;
                frames += 1;
                if stream {
                    tail.extend_from_slice(&data[data.len().saturating_sub(16)..]);
                    let cut = tail.len().saturating_sub(16);
                    tail.drain(..cut);
                }
            }
            Err(e) => {
                s.errors += 1;
                s.note(format!("body ({status}, after {bytes} bytes): {e:?}"));
                return;
            }
        }
    }
    let done = Instant::now();
    if status != StatusCode::OK {
        s.non200 += 1;
        s.note(format!("status {status}"));
        return;
    }
    if let Some(e) = expect_failed {
        s.errors += 1;
        s.note(e);
        return;
    }
    if stream && !tail.ends_with(b"data: [DONE]\n\n") {
        s.incomplete += 1;
        s.note(format!(
            "stream without [DONE]; tail {:?}",
            String::from_utf8_lossy(&tail)
        ));
    }
    s.ok += 1;
    s.lat.push(micros(done - t0));
    s.ttfb.push(micros(first.unwrap_or(done) - t0));
    s.gaps.extend(gap_buf);
    s.frames += frames;
    s.bytes += bytes;
}

/// Runs `requests` requests at `concurrency` (or until `cap` elapses).
pub(crate) async fn drive(
    client: &HttpClient,
    uri: &Uri,
    sc: &Scenario,
    requests: usize,
    cap: Duration,
    check_expect: bool,
) -> (Samples, Duration) {
    let issued = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let stream = sc.kind == Kind::Stream || sc.kind == Kind::Paced;
    let gaps = sc.kind == Kind::Paced;
    let expect = sc.expect.filter(|_| check_expect);
    let mut set = JoinSet::new();
    for _ in 0..sc.concurrency {
        let (client, uri, headers, mut body) = (
            client.clone(),
            uri.clone(),
            sc.headers.clone(),
            sc.body.clone(),
        );
        let bodies = sc.bodies.clone();
        let think = sc.think;
        let issued = issued.clone();
        set.spawn(async move {
            let mut s = Samples::default();
            while issued.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                if let Some((v, next)) = &bodies {
                    body = v[next.fetch_add(1, Ordering::Relaxed) % v.len()].clone();
                }
                one_request(&client, &uri, &headers, &body, stream, gaps, expect, &mut s).await;
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            s
        });
    }
    let mut all = Samples::default();
    while let Some(r) = set.join_next().await {
        all.merge(r.expect("load worker panicked"));
    }
    (all, start.elapsed())
}

/// The processes whose cost an arm adds (none for direct).
#[derive(Clone)]
pub(crate) struct Arm {
    pub(crate) name: &'static str,
    pub(crate) uri: Uri,
    pub(crate) pids: Vec<u32>,
    /// Processes the arm also relies on whose CPU is reported on its own (redis-server in
    /// fleet mode), so the proxy's figure stays comparable with the other configurations.
    pub(crate) side: Vec<u32>,
}

pub(crate) struct Run {
    pub(crate) arm: &'static str,
    pub(crate) s: Samples,
    pub(crate) elapsed: Duration,
    /// Proxy CPU per request, µs (None for direct).
    pub(crate) proxy_cpu: Option<f64>,
    /// Clock ticks behind `proxy_cpu` (its resolution).
    pub(crate) proxy_ticks: u64,
    /// CPU per request of the arm's `side` processes, µs, and its ticks (None without any).
    pub(crate) side_cpu: Option<(f64, u64)>,
    pub(crate) mock_cpu: f64,
    pub(crate) client_cpu: f64,
    /// Peak RSS of this arm's proxy during the run, KiB (sampled for the main instance and
    /// nginx; at the end of the run for another Sluice instance).
    pub(crate) proxy_rss_peak: Option<u64>,
    /// RSS of this arm's proxy process(es) right after the warm-up, KiB (None for direct).
    pub(crate) rss_warm: Option<u64>,
}

impl Run {
    pub(crate) fn rps(&self) -> f64 {
        self.s.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub(crate) struct Env {
    pub(crate) client: HttpClient,
    pub(crate) mock_pid: u32,
    pub(crate) tick_us: f64,
    pub(crate) rss: Arc<RssSampler>,
}

pub(crate) async fn run_arm(env: &Env, arm: &Arm, sc: &Scenario, cap: Duration) -> Run {
    // Warm-up: open the connections and touch the code paths; not measured.
    let warm = (sc.concurrency * 2).min(sc.requests);
    // Only Sluice adds `x-sluice-*` headers (the direct and nginx arms have none to check).
    let check = arm.name == "sluice";
    let _ = drive(
        &env.client,
        &arm.uri,
        sc,
        warm,
        Duration::from_secs(3),
        check,
    )
    .await;
    let rss_warm = (!arm.pids.is_empty()).then(|| rss_kb(&arm.pids));
    let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
    let _ = env.rss.take();
    let (p0, m0, c0) = (ticks(&arm.pids), cpu_ticks(env.mock_pid), self_cpu_ticks());
    let side0 = ticks(&arm.side);
    let (s, elapsed) = drive(&env.client, &arm.uri, sc, sc.requests, cap, check).await;
    let (p1, m1, c1) = (ticks(&arm.pids), cpu_ticks(env.mock_pid), self_cpu_ticks());
    let side1 = ticks(&arm.side);
    let (sluice_peak, nginx_peak) = env.rss.take();
    let n = s.ok.max(1) as f64;
    let per_req = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * env.tick_us / n;
    let mut s = s;
    s.lat.sort_unstable();
    s.ttfb.sort_unstable();
    s.gaps.sort_unstable();
    Run {
        arm: arm.name,
        proxy_cpu: (!arm.pids.is_empty()).then(|| per_req(p0, p1)),
        proxy_ticks: p1.saturating_sub(p0),
        side_cpu: (!arm.side.is_empty())
            .then(|| (per_req(side0, side1), side1.saturating_sub(side0))),
        mock_cpu: per_req(m0, m1),
        client_cpu: per_req(c0, c1),
        proxy_rss_peak: if arm.pids.first() == Some(&env.rss.sluice) {
            Some(sluice_peak)
        } else if arm.name == "nginx" {
            Some(nginx_peak)
        } else {
            arm.pids.first().map(|p| rss_kb(&[*p]))
        },
        rss_warm,
        s,
        elapsed,
    }
}

/// Runs one scenario through each arm in turn (so machine noise hits them alike), with a
/// progress line per run on stderr.
pub(crate) async fn run_scenario(env: &Env, arms: &[Arm], sc: &Scenario) -> Vec<Run> {
    let mut runs = Vec::new();
    for arm in arms {
        let r = run_arm(env, arm, sc, TIME_CAP).await;
        eprintln!(
            "load: {:<26} {:<7} {:>6} ok in {:>5.2} s = {:>7.0} req/s, p50 {:>6} µs, p99 {:>6} µs, proxy CPU {:>6} µs/req, errors {} / {} / {}{}",
            sc.name,
            r.arm,
            r.s.ok,
            r.elapsed.as_secs_f64(),
            r.rps(),
            pct(&r.s.lat, 0.5),
            pct(&r.s.lat, 0.99),
            r.proxy_cpu.map_or("–".into(), |c| format!("{c:.1}")),
            r.s.errors,
            r.s.non200,
            r.s.incomplete,
            if r.s.first_errors.is_empty() {
                String::new()
            } else {
                format!(" {:?}", r.s.first_errors)
            },
        );
        runs.push(r);
    }
    runs
}

/// Result of holding many slow streams open at once through one proxy.
pub(crate) struct ManyStreams {
    pub(crate) arm: &'static str,
    pub(crate) target: usize,
    pub(crate) opened: usize,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    pub(crate) rss_open_kb: u64,
    pub(crate) rss_peak_kb: u64,
    pub(crate) fds_open: usize,
    pub(crate) elapsed: Duration,
    pub(crate) first_errors: Vec<String>,
}

pub(crate) async fn many_streams(env: &Env, arm: &Arm, count: usize) -> ManyStreams {
    let body = chat_body(200, true);
    let hdrs = headers(30, Some(100));
    let opened = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let _ = env.rss.take();
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (client, uri, hdrs, body, opened) = (
            env.client.clone(),
            arm.uri.clone(),
            hdrs.clone(),
            body.clone(),
            opened.clone(),
        );
        set.spawn(async move {
            let mut req = Request::new(Full::new(body));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = uri;
            *req.headers_mut() = hdrs;
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("request: {e:?}"))?;
            let status = resp.status();
            let mut body = resp.into_body();
            let mut counted = false;
            let mut tail = Vec::new();
            while let Some(f) = body.frame().await {
                let f = f.map_err(|e| format!("body: {e:?}"))?;
                if let Ok(d) = f.into_data() {
                    if !counted {
                        counted = true;
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    tail = d.to_vec();
                }
            }
            if status != StatusCode::OK {
                return Err(format!("status {status}"));
            }
            if !tail.ends_with(b"data: [DONE]\n\n") {
                return Err("stream without [DONE]".into());
            }
            Ok(())
        });
    }
    // Wait until every stream has its first byte (or 10 s), then sample while they are open.
    let proxy_pid = arm.pids.last().copied().unwrap_or(env.mock_pid);
    let wait_until = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::Relaxed) < count && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n_open = opened.load(Ordering::Relaxed);
    let mut rss_open = 0;
    let mut fds_open = 0;
    for _ in 0..5 {
        rss_open = rss_open.max(rss_kb(&arm.pids));
        fds_open = fds_open.max(fd_count(proxy_pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut ok, mut failed, mut first_errors) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        match r.expect("stream task panicked") {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if first_errors.len() < 3 {
                    first_errors.push(e);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    let (sluice_peak, nginx_peak) = env.rss.take();
    ManyStreams {
        arm: arm.name,
        target: count,
        opened: n_open,
        ok,
        failed,
        rss_open_kb: rss_open,
        rss_peak_kb: if arm.name == "sluice" {
            sluice_peak
        } else {
            nginx_peak
        },
        fds_open,
        elapsed,
        first_errors,
    }
}

/// Sustained non-streaming load through each proxy, reported per 5 s interval.
pub(crate) async fn soak(env: &Env, arms: &[Arm], secs: u64) -> String {
    let sc = Scenario {
        name: "soak chat c=64".into(),
        kind: Kind::NonStream,
        concurrency: 64,
        requests: usize::MAX,
        body: chat_body(200, false),
        headers: headers(20, None),
        expect: None,
        bodies: None,
        think: Duration::ZERO,
    };
    let mut o = String::new();
    let _ = writeln!(o, "# Soak: non-streaming chat, c=64, {secs} s per proxy\n");
    let _ = writeln!(o, "{}", machine_info());
    let _ = writeln!(
        o,
        "| proxy | t (s) | req/s | p50 µs | p99 µs | proxy CPU µs/req (ticks) | proxy RSS MB | errors / non-200 |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for arm in arms.iter().filter(|a| !a.pids.is_empty()) {
        let start = Instant::now();
        while start.elapsed().as_secs() < secs {
            let ticks = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();
            let p0 = ticks(&arm.pids);
            let (mut s, elapsed) = drive(
                &env.client,
                &arm.uri,
                &sc,
                usize::MAX,
                Duration::from_secs(5),
                false,
            )
            .await;
            let dt = ticks(&arm.pids).saturating_sub(p0);
            s.lat.sort_unstable();
            let line = format!(
                "| {} | {} | {:.0} | {} | {} | {:.1} ({dt}) | {} | {} / {} |",
                arm.name,
                start.elapsed().as_secs(),
                s.ok as f64 / elapsed.as_secs_f64(),
                pct(&s.lat, 0.5),
                pct(&s.lat, 0.99),
                dt as f64 * env.tick_us / s.ok.max(1) as f64,
                mb(rss_kb(&arm.pids)),
                s.errors,
                s.non200,
            );
            eprintln!("soak: {line}");
            let _ = writeln!(o, "{line}");
        }
    }
    o
}

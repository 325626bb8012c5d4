//! Report sections for the extra Sluice instances: the features instance (cache hits, memory
//! per cached MB, failover) and the scenario matrix (issue #17).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::configs::{MatrixConfig, MATRIX_GLOB_RULES, MATRIX_KEYS};
use crate::drive::Run;
use crate::processes::{FAILING_CONNS, FAILING_REQS};
use crate::procfs::clk_tck;
use crate::report::{find, mb, pct, signed};
use crate::scenarios::{CacheFill, Scenario};

/// The report section for the features instance: cache hit vs direct, memory per cached MB,
/// failover overhead.
pub(crate) fn features_report(
    results: &[(Scenario, Vec<Run>)],
    fill: Option<&CacheFill>,
    idle_kb: u64,
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let get = |name: &str| results.iter().find(|(sc, _)| sc.name == name);
    let _ = writeln!(w, "\n## Features instance (cache, failover)\n");
    let _ = writeln!(
        w,
        "A second Sluice process with `[cache] mode = \"deterministic\"`, an admin token, \
         `[retry] max_retries = 0`, a breaker that never opens, and a model `failover` whose only \
         deployment is a provider answering 500 (inside the harness), `fallbacks = [\"clean\"]` \
         (the mock). Idle RSS of this instance: {} MB.\n",
        mb(idle_kb)
    );
    let _ = writeln!(
        w,
        "### Cache hit vs direct to the mock (x-mock-words: 50)\n"
    );
    let _ = writeln!(
        w,
        "Every measured Sluice response had to carry `x-sluice-cache: hit` (else counted as an error). \
         The warm-up request fills the entry.\n"
    );
    let _ = writeln!(
        w,
        "| scenario | direct p50 / p99 | sluice hit p50 / p99 | hit − direct p50 / p99 | sluice CPU µs/req (ticks) | mock CPU µs/req, direct arm | hits ok / errors (non-hit) | headers |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for name in [
        "cache hit c=1",
        "cache hit c=16",
        "cache hit stream c=1",
        "cache hit stream c=16",
    ] {
        let Some((_, runs)) = get(name) else { continue };
        let (Some(d), Some(s)) = (find(runs, "direct"), find(runs, "sluice")) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {name} | {} / {} | {} / {} | {} / {} | {:.1} ({}) | {:.1} | {} / {} | {} |",
            pct(&d.s.lat, 0.5),
            pct(&d.s.lat, 0.99),
            pct(&s.s.lat, 0.5),
            pct(&s.s.lat, 0.99),
            signed(pct(&s.s.lat, 0.5) as i64 - pct(&d.s.lat, 0.5) as i64),
            signed(pct(&s.s.lat, 0.99) as i64 - pct(&d.s.lat, 0.99) as i64),
            s.proxy_cpu.unwrap_or(0.0),
            s.proxy_ticks,
            d.mock_cpu,
            s.s.ok,
            s.s.errors + s.s.non200 + s.s.incomplete,
            s.s.first_headers.as_deref().unwrap_or("–"),
        );
    }
    if let Some(f) = fill {
        let rss_delta = f.rss_after_kb.saturating_sub(f.rss_before_kb) * 1024;
        let resp_bytes = f.fill.bytes;
        let _ = writeln!(w, "\n### Memory per cached MB\n");
        let _ = writeln!(
            w,
            "{} distinct `temperature: 0` requests at c=16, answers of `x-mock-large-response-kb: {}` \
             (all misses, so all stored), then the same {} again (all must be hits).\n",
            f.entries, f.kb, f.entries
        );
        let _ = writeln!(w, "| measure | value |");
        let _ = writeln!(w, "|---|---|");
        let _ = writeln!(w, "| fill: ok / errors (non-miss) / non-200 | {} / {} / {} in {:.2} s, p50 {} µs, p99 {} µs, Sluice CPU {:.0} µs/req |",
            f.fill.ok, f.fill.errors, f.fill.non200, f.fill_elapsed.as_secs_f64(), pct(&f.fill.lat, 0.5), pct(&f.fill.lat, 0.99), f.cpu_fill_us);
        let _ = writeln!(w, "| re-read: hits ok / errors (non-hit) | {} / {} in {:.2} s, p50 {} µs, p99 {} µs, Sluice CPU {:.0} µs/req |",
            f.reread.ok, f.reread.errors, f.reread_elapsed.as_secs_f64(), pct(&f.reread.lat, 0.5), pct(&f.reread.lat, 0.99), f.cpu_reread_us);
        let _ = writeln!(
            w,
            "| response bytes received during the fill | {:.1} MB ({} B/resp) |",
            resp_bytes as f64 / 1048576.0,
            resp_bytes / f.fill.ok.max(1) as u64
        );
        let _ = writeln!(
            w,
            "| `GET /admin/cache` before → after the fill | `{}` → `{}` |",
            f.stats_before.trim(),
            f.stats_after.trim()
        );
        let _ = writeln!(
            w,
            "| RSS before → after fill → after re-read | {} → {} → {} MB |",
            mb(f.rss_before_kb),
            mb(f.rss_after_kb),
            mb(f.rss_after_reread_kb)
        );
        if let Some(cb) = f.cache_bytes_delta {
            let _ = writeln!(
                w,
                "| RSS growth / cached bytes (admin `bytes`) | {:.1} MB / {:.1} MB = **{:.2}×** |",
                rss_delta as f64 / 1048576.0,
                cb as f64 / 1048576.0,
                rss_delta as f64 / (cb as f64).max(1.0)
            );
        }
        let _ = writeln!(
            w,
            "| RSS growth / response bytes | {:.1} MB / {:.1} MB = {:.2}× |",
            rss_delta as f64 / 1048576.0,
            resp_bytes as f64 / 1048576.0,
            rss_delta as f64 / (resp_bytes as f64).max(1.0)
        );
    }
    let _ = writeln!(
        w,
        "\n### Failover path vs clean model (same instance, same run)\n"
    );
    let _ = writeln!(
        w,
        "The failing provider accepted {} TCP connections for {} requests (warm-ups included).\n",
        FAILING_CONNS.load(Ordering::Relaxed),
        FAILING_REQS.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        w,
        "`failover`: attempt 1 → 500 from the failing provider, then the fallback `clean` → mock. \
         The failing provider runs in the harness, so its CPU is in the client column, not Sluice's.\n"
    );
    let _ = writeln!(
        w,
        "| c | clean p50 / p99 | failover p50 / p99 | failover − clean p50 / p99 | Sluice CPU µs/req clean / failover (ticks) | extra CPU µs/req | ok / errors+non-200 (failover) | failover headers |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for c in [1, 16] {
        let (Some((_, cr)), Some((_, fr))) = (
            get(&format!("clean model c={c}")),
            get(&format!("failover model c={c}")),
        ) else {
            continue;
        };
        let (Some(cl), Some(fo)) = (find(cr, "sluice"), find(fr, "sluice")) else {
            continue;
        };
        let (cc, fc) = (cl.proxy_cpu.unwrap_or(0.0), fo.proxy_cpu.unwrap_or(0.0));
        let _ = writeln!(
            w,
            "| {c} | {} / {} | {} / {} | {} / {} | {:.1} / {:.1} ({} / {}) | {:+.1} | {} / {} | {} |",
            pct(&cl.s.lat, 0.5),
            pct(&cl.s.lat, 0.99),
            pct(&fo.s.lat, 0.5),
            pct(&fo.s.lat, 0.99),
            signed(pct(&fo.s.lat, 0.5) as i64 - pct(&cl.s.lat, 0.5) as i64),
            signed(pct(&fo.s.lat, 0.99) as i64 - pct(&cl.s.lat, 0.99) as i64),
            cc,
            fc,
            cl.proxy_ticks,
            fo.proxy_ticks,
            fc - cc,
            fo.s.ok,
            fo.s.errors + fo.s.non200,
            fo.s.first_headers.as_deref().unwrap_or("–"),
        );
    }
    o
}

/// One matrix configuration's run: its Sluice instance's idle RSS and the arms' runs.
pub(crate) struct MatrixRun {
    pub(crate) config: MatrixConfig,
    pub(crate) idle_kb: u64,
    /// RSS of the processes the instance relied on (redis-server) after its run, KiB.
    pub(crate) side_rss_kb: Option<u64>,
    pub(crate) scenario: Scenario,
    pub(crate) runs: Vec<Run>,
}

/// The scenario-matrix section: per configuration, req/s, CPU per request and RSS of its
/// Sluice beside nginx (same run), then the issue #17 ratios and the fleet-mode comparison
/// (issue 11). `skipped`: scenarios that could not run (no redis-server).
pub(crate) fn matrix_report(matrix: &[MatrixRun], skipped: &[String]) -> String {
    let mut o = String::new();
    if matrix.is_empty() && skipped.is_empty() {
        return o;
    }
    let w = &mut o;
    let _ = writeln!(w, "\n## Scenario matrix (issue #17)\n");
    let _ = writeln!(
        w,
        "One fresh Sluice process per configuration, started just before its scenario and \
         stopped after it; the same short non-streaming request (model `gpt-4o-mini`, \
         a system prompt and a five-word question, `temperature: 0`, `max_tokens: 256`, a \
         20-word answer) at c=16 (the limits+budget pair also at c=1) through the mock directly, \
         that Sluice and nginx, back to back. \
         Configurations: **plain** = passthrough key, one `*` rule, no limits; \
         **limits+budget** = one virtual key, one model rule, a per-user rate limit \
         (100,000,000 requests/min) and a per-user daily budget ($1,000,000); **10k keys + 2k \
         rules** = {MATRIX_KEYS} virtual keys (the client uses the last) and {} model rules \
         (`m-N-*` globs, the requested model's exact rule last), same limit and budget; \
         **cache on** = plain with `[cache] mode = \"deterministic\"` (every measured response \
         must be a hit); **limits+budget (redis)** = limits+budget with `[state] backend = \
         \"redis\"` against a private redis-server (AOF, fsync every second; a fresh key prefix \
         per instance), whose own CPU is its own column. CPU = utime+stime of the Sluice (or nginx master + worker) process \
         from /proc over the measured run, per successful request; one tick is {:.0} µs.\n",
        MATRIX_GLOB_RULES + 1,
        1e6 / clk_tck() as f64
    );
    let _ = writeln!(
        w,
        "| configuration | sluice req/s | nginx req/s | sluice CPU ms/req (ticks) | redis CPU ms/req (ticks) | nginx CPU ms/req (ticks) | sluice / nginx CPU | sluice RSS idle → after warm-up → after run MB | nginx RSS after warm-up MB | sluice p50 / p99 µs | errors / non-200 |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|---|");
    let ms = |r: Option<&Run>| {
        r.and_then(|r| {
            r.proxy_cpu
                .map(|c| format!("{:.3} ({})", c / 1000.0, r.proxy_ticks))
        })
        .unwrap_or_else(|| "–".into())
    };
    let side_ms = |r: Option<&Run>| {
        r.and_then(|r| r.side_cpu)
            .map_or("–".into(), |(c, t)| format!("{:.3} ({t})", c / 1000.0))
    };
    for name in skipped {
        let _ = writeln!(
            w,
            "| {name}: skipped, redis-server not installed | | | | | | | | | | |"
        );
    }
    for m in matrix {
        let (s, n) = (find(&m.runs, "sluice"), find(&m.runs, "nginx"));
        let ratio = s
            .and_then(|s| s.proxy_cpu)
            .zip(n.and_then(|n| n.proxy_cpu))
            .map_or("–".into(), |(s, n)| format!("{:.2}×", s / n.max(1e-9)));
        let _ = writeln!(
            w,
            "| {} c={} | {} | {} | {} | {} | {} | {} | {} → {} → {} | {} | {} | {} |",
            m.config.label(),
            m.scenario.concurrency,
            s.map_or("–".into(), |r| format!("{:.0}", r.rps())),
            n.map_or("–".into(), |r| format!("{:.0}", r.rps())),
            ms(s),
            side_ms(s),
            ms(n),
            ratio,
            mb(m.idle_kb),
            s.and_then(|r| r.rss_warm).map_or("–".into(), mb),
            s.and_then(|r| r.proxy_rss_peak).map_or("–".into(), mb),
            n.and_then(|r| r.rss_warm).map_or("–".into(), mb),
            s.map_or("–".into(), |r| format!(
                "{} / {}",
                pct(&r.s.lat, 0.5),
                pct(&r.s.lat, 0.99)
            )),
            s.map_or("–".into(), |r| format!(
                "{} / {}",
                r.s.errors + r.s.incomplete,
                r.s.non200
            )),
        );
    }
    // The goals, computed from this run (one run: read them with the tick counts).
    let cpu = |c: MatrixConfig| {
        matrix
            .iter()
            .find(|m| m.config == c && m.scenario.concurrency == 16)
            .and_then(|m| find(&m.runs, "sluice"))
            .and_then(|r| r.proxy_cpu)
    };
    let _ = writeln!(w, "\n| issue #17 goal | measured | verdict |");
    let _ = writeln!(w, "|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let ratios = [
        (
            "limits+budget CPU/req ≤ 1.3× plain",
            MatrixConfig::LimitsBudget,
            MatrixConfig::Plain,
            1.3,
        ),
        (
            "tracing on (every request sampled) CPU/req vs plain (no goal; reported)",
            MatrixConfig::Tracing,
            MatrixConfig::Plain,
            f64::INFINITY,
        ),
        (
            "10k keys + 2k rules CPU/req ≤ 1.1× limits+budget (1 key, 1 rule)",
            MatrixConfig::ManyKeys,
            MatrixConfig::LimitsBudget,
            1.1,
        ),
    ];
    for (goal, a, b, max) in ratios {
        if let (Some(x), Some(y)) = (cpu(a), cpu(b)) {
            let ratio = x / y.max(1e-9);
            let _ = writeln!(
                w,
                "| {goal} | {:.3} vs {:.3} ms = {ratio:.2}× | {} |",
                x / 1000.0,
                y / 1000.0,
                verdict(ratio <= max)
            );
        }
    }
    for m in matrix {
        if let Some(kb) = find(&m.runs, "sluice").and_then(|r| r.rss_warm) {
            let _ = writeln!(
                w,
                "| RSS ≤ 50 MB after warm-up ({} c={}) | {} MB | {} |",
                m.config.label(),
                m.scenario.concurrency,
                mb(kb),
                verdict(kb <= 50 * 1024)
            );
        }
    }
    fleet_report(w, matrix);
    shadow_report(w, matrix);
    translation_report(w, matrix);
    o
}

/// The Sluice arms of two matrix configurations at each concurrency both ran at (1 and 16), as
/// `(concurrency, a, b)`.
fn sluice_pairs(
    matrix: &[MatrixRun],
    a: MatrixConfig,
    b: MatrixConfig,
) -> Vec<(String, &Run, &Run)> {
    let at = |config, c, think: bool| {
        matrix
            .iter()
            .find(|m| {
                m.config == config
                    && m.scenario.concurrency == c
                    && m.scenario.think.is_zero() != think
            })
            .and_then(|m| find(&m.runs, "sluice"))
    };
    [(1, false), (16, false), (1, true)]
        .into_iter()
        .filter_map(|(c, think)| {
            let label = if think {
                format!("{c}, {} ms think", crate::scenarios::THINK.as_millis())
            } else {
                c.to_string()
            };
            Some((label, at(a, c, think)?, at(b, c, think)?))
        })
        .collect()
}

/// A translated stream (issue 15): the same streamed OpenAI request with its model on the mock's
/// OpenAI API and on its Anthropic API (translated both ways). The goal: TTFB p50 within 0.2 ms.
fn translation_report(w: &mut String, matrix: &[MatrixRun]) {
    let rows = sluice_pairs(matrix, MatrixConfig::Stream, MatrixConfig::Translated);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n### A translated stream (issue 15)\n");
    let _ = writeln!(
        w,
        "The same streamed OpenAI chat request (20 words) through Sluice with a virtual key, its \
         model on the mock's OpenAI API (untranslated) or on its Anthropic API (request \
         translated to messages, every event back to chunks). Goal: TTFB p50 within 0.2 ms.\n"
    );
    let _ = writeln!(
        w,
        "| c | streams/s untranslated / translated | TTFB p50 µs untranslated / translated (added) | TTFB p99 µs | total p50 µs | Sluice CPU ms/stream untranslated / translated | errors (translated) | within 0.2 ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for (c, a, b) in rows {
        let added = pct(&b.s.ttfb, 0.5) as i64 - pct(&a.s.ttfb, 0.5) as i64;
        let _ = writeln!(
            w,
            "| {c} | {:.0} / {:.0} | {} / {} ({}) | {} / {} | {} / {} | {:.3} / {:.3} | {} / {} | {} |",
            a.rps(),
            b.rps(),
            pct(&a.s.ttfb, 0.5),
            pct(&b.s.ttfb, 0.5),
            signed(added),
            pct(&a.s.ttfb, 0.99),
            pct(&b.s.ttfb, 0.99),
            pct(&a.s.lat, 0.5),
            pct(&b.s.lat, 0.5),
            a.proxy_cpu.unwrap_or(0.0) / 1000.0,
            b.proxy_cpu.unwrap_or(0.0) / 1000.0,
            b.s.errors + b.s.incomplete,
            b.s.non200,
            if added <= 200 { "yes" } else { "no" },
        );
    }
}

/// A 100 % shadow (issue 12): limits+budget with and without a `[[shadows]]` rule mirroring
/// every request, at each concurrency both ran at. The goal: no measurable change to the
/// primary's latency (the copies run off the client's path; they share the machine).
fn shadow_report(w: &mut String, matrix: &[MatrixRun]) {
    let rows = sluice_pairs(matrix, MatrixConfig::LimitsBudget, MatrixConfig::Shadow);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n### A 100 % shadow on the primary path (issue 12)\n");
    let _ = writeln!(
        w,
        "limits+budget vs the same with every request mirrored to a shadow model on the same \
         mock. Latency is the primary's (the client's); CPU is Sluice's per primary request, \
         copies included.\n"
    );
    let _ = writeln!(
        w,
        "| c | req/s without / with | p50 µs without / with (added) | p99 µs without / with | Sluice CPU ms/req without / with | errors / non-200 (with) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for (c, a, b) in rows {
        let added = pct(&b.s.lat, 0.5) as i64 - pct(&a.s.lat, 0.5) as i64;
        let _ = writeln!(
            w,
            "| {c} | {:.0} / {:.0} | {} / {} ({}) | {} / {} | {:.3} / {:.3} | {} / {} |",
            a.rps(),
            b.rps(),
            pct(&a.s.lat, 0.5),
            pct(&b.s.lat, 0.5),
            signed(added),
            pct(&a.s.lat, 0.99),
            pct(&b.s.lat, 0.99),
            a.proxy_cpu.unwrap_or(0.0) / 1000.0,
            b.proxy_cpu.unwrap_or(0.0) / 1000.0,
            b.s.errors + b.s.incomplete,
            b.s.non200,
        );
    }
}

/// Fleet mode (issue 11): limits+budget with `[state] backend = "redis"` against the same
/// config with embedded state, at each concurrency both ran at. The goal: added p50 ≤ +0.3 ms.
fn fleet_report(w: &mut String, matrix: &[MatrixRun]) {
    let at = |c: MatrixConfig, conc: usize| {
        matrix
            .iter()
            .find(|m| m.config == c && m.scenario.concurrency == conc)
    };
    let pairs: Vec<_> = [1, 16]
        .into_iter()
        .filter_map(|c| {
            let e = at(MatrixConfig::LimitsBudget, c)?;
            let r = at(MatrixConfig::LimitsBudgetRedis, c)?;
            Some((c, find(&e.runs, "sluice")?, find(&r.runs, "sluice")?, r))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n### Fleet mode: redis vs embedded (issue 11)\n");
    let _ = writeln!(
        w,
        "limits+budget (embedded state) vs limits+budget (redis), same request. Added p50 = redis \
         p50 − embedded p50 (goal ≤ +300 µs). Total CPU = Sluice + redis-server, per request.\n"
    );
    let _ = writeln!(
        w,
        "| c | req/s embedded / redis | p50 µs embedded / redis (added) | p99 µs embedded / redis | Sluice CPU ms/req embedded / redis | redis-server CPU ms/req (ticks) | total CPU ms/req redis / embedded | redis-server RSS MB | errors / non-200 (redis) | added p50 ≤ +300 µs |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (c, e, r, rm) in pairs {
        let (ec, rc) = (e.proxy_cpu.unwrap_or(0.0), r.proxy_cpu.unwrap_or(0.0));
        let (side, ticks) = r.side_cpu.unwrap_or((0.0, 0));
        let added = pct(&r.s.lat, 0.5) as i64 - pct(&e.s.lat, 0.5) as i64;
        let _ = writeln!(
            w,
            "| {c} | {:.0} / {:.0} | {} / {} ({}) | {} / {} | {:.3} / {:.3} | {:.3} ({ticks}) | {:.3} / {:.3} = {:.2}× | {} | {} / {} | {} |",
            e.rps(),
            r.rps(),
            pct(&e.s.lat, 0.5),
            pct(&r.s.lat, 0.5),
            signed(added),
            pct(&e.s.lat, 0.99),
            pct(&r.s.lat, 0.99),
            ec / 1000.0,
            rc / 1000.0,
            side / 1000.0,
            (rc + side) / 1000.0,
            ec / 1000.0,
            (rc + side) / ec.max(1e-9),
            rm.side_rss_kb.map_or("–".into(), mb),
            r.s.errors + r.s.incomplete,
            r.s.non200,
            if added <= 300 { "met" } else { "NOT met" },
        );
    }
}

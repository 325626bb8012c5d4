use super::*;
use crate::vocab::{Dim, Identity};
use std::sync::atomic::AtomicU64;

fn rule(
    name: &str,
    scope: Vec<Dim>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    conc: Option<u64>,
) -> RateRule {
    RateRule {
        name: name.into(),
        scope,
        models: None,
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        max_concurrent: conc,
        overrides: Default::default(),
    }
}

fn id(user: &str) -> Identity {
    Identity {
        key: Some("k".into()),
        user: Some(user.into()),
        ..Identity::default()
    }
}

#[test]
fn requests_per_minute_per_user() {
    let l = Arc::new(RateLimiter::default());
    let rules = [rule("u", vec![Dim::User], Some(2), None, None)];
    let (alice, bob) = (id("alice"), id("bob"));
    let a = Subject {
        identity: &alice,
        model: "m",
    };
    let b = Subject {
        identity: &bob,
        model: "m",
    };
    assert!(l.admit(&rules, &a, 0).is_ok());
    let second = l.admit(&rules, &a, 0).expect("second");
    assert_eq!(second.allowance.requests.map(|r| (r.0, r.1)), Some((2, 0)));
    let e = l.admit(&rules, &a, 0).expect_err("third");
    assert_eq!(e.kind, LimitKind::Requests);
    assert!(e.retry_after > Duration::from_secs(50));
    assert!(l.admit(&rules, &b, 0).is_ok(), "bob has his own bucket");
}

#[test]
fn tokens_reserve_then_settle() {
    let l = Arc::new(RateLimiter::default());
    let rules = [rule("t", vec![], None, Some(1000), None)];
    let who = id("a");
    let s = Subject {
        identity: &who,
        model: "m",
    };
    let first = l.admit(&rules, &s, 800).expect("fits");
    assert!(
        l.admit(&rules, &s, 300).is_err(),
        "reserved 800, 300 more does not fit"
    );
    first.settle(100);
    assert!(l.admit(&rules, &s, 300).is_ok(), "settled at 100 actual");
    let e = l.admit(&rules, &s, 5000).expect_err("never fits");
    assert!(e.never_fits);
}

#[test]
fn refusal_releases_earlier_rules_and_concurrency_is_released() {
    let l = Arc::new(RateLimiter::default());
    let rules = [
        rule("c", vec![Dim::Key], None, None, Some(1)),
        rule("t", vec![], None, Some(10), None),
    ];
    let who = id("a");
    let s = Subject {
        identity: &who,
        model: "m",
    };
    assert!(l.admit(&rules, &s, 50).is_err(), "tokens refuse");
    let held = l
        .admit(&rules, &s, 5)
        .expect("concurrency slot was released");
    assert_eq!(
        l.admit(&rules, &s, 1).expect_err("busy").kind,
        LimitKind::Concurrent
    );
    drop(held);
    assert!(
        l.admit(&rules, &s, 1).is_ok(),
        "a dropped admission frees its slot"
    );
}

#[test]
fn model_filter_and_snapshot() {
    let l = Arc::new(RateLimiter::default());
    let mut r = rule("gpt", vec![Dim::User, Dim::Model], Some(1), None, None);
    r.models = Some(vec!["gpt-*".into()]);
    let who = id("alice");
    assert!(l
        .admit(
            std::slice::from_ref(&r),
            &Subject {
                identity: &who,
                model: "claude"
            },
            0
        )
        .is_ok());
    assert!(l
        .admit(
            std::slice::from_ref(&r),
            &Subject {
                identity: &who,
                model: "claude"
            },
            0
        )
        .is_ok());
    assert!(l
        .admit(
            std::slice::from_ref(&r),
            &Subject {
                identity: &who,
                model: "gpt-4o"
            },
            0
        )
        .is_ok());
    assert!(l
        .admit(
            std::slice::from_ref(&r),
            &Subject {
                identity: &who,
                model: "gpt-4o"
            },
            0
        )
        .is_err());
    let snap = l.snapshot("user=alice");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].bucket, "gpt|user=alice|model=gpt-4o");
    assert_eq!(snap[0].requests_last_minute, 1);
}

#[test]
fn concurrent_admissions_never_exceed_the_limit() {
    let l = Arc::new(RateLimiter::default());
    let rules = Arc::new([rule("g", vec![], Some(25), Some(2500), None)]);
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (l, rules, admitted) = (l.clone(), rules.clone(), admitted.clone());
            std::thread::spawn(move || {
                let who = id("x");
                for _ in 0..50 {
                    if let Ok(a) = l.admit(
                        &*rules,
                        &Subject {
                            identity: &who,
                            model: "m",
                        },
                        100,
                    ) {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        a.settle(100);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 25);
}

#[test]
fn past_the_cap_new_identities_share_an_overflow_bucket_under_the_same_limit() {
    let l = Arc::new(RateLimiter::default());
    l.set_max_buckets(SHARDS * 4);
    let rules = [rule("u", vec![Dim::User], Some(3), None, None)];
    let mut admitted = 0;
    for i in 0..1000 {
        let who = id(&format!("user-{i}"));
        let s = Subject {
            identity: &who,
            model: "m",
        };
        if l.admit(&rules, &s, 0).is_ok() {
            admitted += 1;
        }
    }
    // At most 4 buckets per shard, plus the overflow bucket.
    assert!(l.entries() <= SHARDS * 4 + 1, "{} buckets", l.entries());
    // The overflow bucket never lets more through than one identity's limit.
    let own = l.entries() - 1;
    assert_eq!(
        admitted,
        own + 3,
        "one each in own buckets, 3 in the overflow"
    );
    let snap = l.snapshot("~overflow");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].bucket, "u|~overflow");
    assert_eq!(snap[0].requests_last_minute, 3);

    // A known identity keeps its own bucket.
    let first = id("user-0");
    let s = Subject {
        identity: &first,
        model: "m",
    };
    assert!(l.admit(&rules, &s, 0).is_ok());
    assert_eq!(l.snapshot("user=user-0")[0].requests_last_minute, 2);
}

#[test]
fn idle_buckets_are_swept() {
    let l = Arc::new(RateLimiter::default());
    let rules = [rule("u", vec![Dim::User], Some(10), None, Some(5))];
    let t0 = Instant::now();
    let mut held = Vec::new();
    for i in 0..100 {
        let who = id(&format!("user-{i}"));
        let s = Subject {
            identity: &who,
            model: "m",
        };
        held.push(l.admit(&rules, &s, 0).expect("admitted"));
    }
    assert_eq!(l.sweep(t0), 100, "in the window");
    // Past the window, only buckets with requests in flight stay.
    let later = t0 + Duration::from_secs(super::super::window::SPAN + 1);
    held.truncate(10);
    assert_eq!(l.sweep(later), 10);
    drop(held);
    assert_eq!(l.sweep(later), 0);
    assert_eq!(l.entries(), 0);
}

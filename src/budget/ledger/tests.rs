use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::auth::Identity;
use crate::config::Dim;
use crate::window::Window;

fn rule(
    name: &str,
    scope: Vec<Dim>,
    window: Window,
    limit: Nanos,
    action: BudgetAction,
) -> BudgetRule {
    BudgetRule {
        name: name.into(),
        scope,
        window,
        limit,
        action,
        downgrade_to: Some("cheap".into()),
        downgrade_permille: 800,
        alert_permille: vec![500, 1000],
        models: None,
        webhook: None,
        overrides: Default::default(),
    }
}

fn who(user: &str) -> Identity {
    Identity {
        user: Some(user.into()),
        ..Identity::default()
    }
}

fn clock(at: &Arc<AtomicU64>) -> Clock {
    let at = at.clone();
    Arc::new(move || at.load(Ordering::SeqCst))
}

const T: u64 = 1_795_665_132; // 2026-11-26T03:52:12Z

#[test]
fn concurrent_reservations_cannot_overspend() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let budgets = Arc::new(vec![rule(
        "b",
        vec![],
        Window::Day,
        1000,
        BudgetAction::Reject,
    )]);
    let holds = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let (ledger, budgets, holds) = (ledger.clone(), budgets.clone(), holds.clone());
            std::thread::spawn(move || {
                let id = who("a");
                if let Ok(h) = ledger.reserve(
                    &budgets,
                    &Subject {
                        identity: &id,
                        model: "m",
                    },
                    100,
                ) {
                    holds.lock().expect("lock").push(h);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    let held: Vec<BudgetHold> = std::mem::take(&mut *holds.lock().expect("lock"));
    assert_eq!(
        held.len(),
        10,
        "a budget that fits 10 lets exactly 10 through"
    );
    for h in held {
        h.settle(&budgets, 100, None);
    }
    let r = ledger.report(&budgets);
    assert_eq!(r[0].spent_usd, nanos_to_usd(1000));
    assert_eq!(r[0].reserved_usd, 0.0);
}

#[test]
fn settle_releases_the_worst_case_and_charges_the_actual() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let budgets = vec![rule(
        "b",
        vec![Dim::User],
        Window::Day,
        1000,
        BudgetAction::Reject,
    )];
    let id = who("a");
    let s = Subject {
        identity: &id,
        model: "m",
    };
    let h = ledger.reserve(&budgets, &s, 900).expect("fits");
    assert_eq!(h.remaining, Some(100));
    assert!(
        ledger.reserve(&budgets, &s, 200).is_err(),
        "worst case held"
    );
    let crossed = h.settle(&budgets, 600, None);
    assert_eq!(crossed, vec![("b".to_owned(), "b|user=a".to_owned(), 500)]);
    assert!(
        ledger.reserve(&budgets, &s, 400).is_ok(),
        "600 spent, 400 left"
    );
    let other = who("b");
    assert!(
        ledger
            .reserve(
                &budgets,
                &Subject {
                    identity: &other,
                    model: "m"
                },
                1000
            )
            .is_ok(),
        "per user"
    );
}

#[test]
fn windows_roll_over_on_the_calendar() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let budgets = vec![
        rule("daily", vec![], Window::Day, 1000, BudgetAction::Reject),
        rule("monthly", vec![], Window::Month, 1500, BudgetAction::Reject),
    ];
    let id = who("a");
    let s = Subject {
        identity: &id,
        model: "m",
    };
    ledger
        .reserve(&budgets, &s, 1000)
        .expect("fits")
        .settle(&budgets, 1000, None);
    assert!(ledger.reserve(&budgets, &s, 1).is_err(), "day spent");
    now.store(Window::Day.ends_at(T).expect("end"), Ordering::SeqCst);
    ledger
        .reserve(&budgets, &s, 400)
        .expect("a new day")
        .settle(&budgets, 400, None);
    let e = ledger
        .reserve(&budgets, &s, 200)
        .expect_err("the month is not over");
    assert_eq!(e.budget, "monthly");
    now.store(Window::Month.ends_at(T).expect("end"), Ordering::SeqCst);
    assert!(ledger.reserve(&budgets, &s, 900).is_ok(), "a new month");
}

#[test]
fn downgrade_past_the_threshold_and_alert_never_refuses() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let budgets = vec![
        rule("soft", vec![], Window::Day, 1000, BudgetAction::Downgrade),
        rule("watch", vec![], Window::Day, 10, BudgetAction::Alert),
    ];
    let id = who("a");
    let s = Subject {
        identity: &id,
        model: "m",
    };
    assert_eq!(ledger.downgrade(&budgets, &s), None);
    ledger
        .reserve(&budgets, &s, 800)
        .expect("fits")
        .settle(&budgets, 800, None);
    assert_eq!(ledger.downgrade(&budgets, &s).as_deref(), Some("cheap"));
    assert!(
        ledger.reserve(&budgets, &s, 300).is_err(),
        "downgrade budgets still stop at 100%"
    );
    assert!(
        ledger.reserve(&budgets, &s, 100).is_ok(),
        "the alert budget (10) never refuses"
    );
}

#[tokio::test]
async fn spend_survives_a_restart_and_resets_are_kept() {
    let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.jsonl");
    let _ = std::fs::remove_file(&path);
    let now = Arc::new(AtomicU64::new(T));
    let budgets = vec![
        rule(
            "u",
            vec![Dim::User],
            Window::Day,
            1000,
            BudgetAction::Reject,
        ),
        rule("g", vec![], Window::Lifetime, 10_000, BudgetAction::Reject),
    ];
    let id = who("a");
    let s = Subject {
        identity: &id,
        model: "m",
    };
    {
        let ledger = Ledger::open(&path, &budgets, UsageLog::off(), clock(&now)).expect("open");
        ledger
            .reserve(&budgets, &s, 500)
            .expect("ok")
            .settle(&budgets, 300, None);
        ledger
            .reserve(&budgets, &s, 500)
            .expect("ok")
            .settle(&budgets, 200, None);
        assert!(ledger.reset(&budgets, "g"));
        ledger.close().await;
    }
    let ledger = Ledger::open(&path, &budgets, UsageLog::off(), clock(&now)).expect("reopen");
    let report = ledger.report(&budgets);
    let spent = |b: &str| report.iter().find(|r| r.bucket == b).map(|r| r.spent_usd);
    assert_eq!(spent("u|user=a"), Some(nanos_to_usd(500)));
    assert_eq!(
        spent("g"),
        None,
        "the reset global budget has nothing left to load"
    );
    ledger.close().await;
    // The next day, yesterday's spend no longer counts.
    now.store(Window::Day.ends_at(T).expect("end"), Ordering::SeqCst);
    let ledger = Ledger::open(&path, &budgets, UsageLog::off(), clock(&now)).expect("reopen");
    assert!(ledger.report(&budgets).is_empty());
    ledger.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn absurd_amounts_saturate_instead_of_wrapping() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let budgets = vec![
        rule("b", vec![], Window::Day, 1000, BudgetAction::Reject),
        rule("watch", vec![], Window::Day, 1000, BudgetAction::Alert),
    ];
    let id = who("a");
    let s = Subject {
        identity: &id,
        model: "m",
    };
    assert!(
        ledger.reserve(&budgets, &s, u64::MAX).is_err(),
        "too big, not wrapped"
    );
    let h = ledger.reserve(&budgets, &s, 10).expect("fits");
    h.settle(&budgets, u64::MAX, None);
    let h = ledger
        .reserve(&budgets[1..], &s, u64::MAX)
        .expect("alert only");
    h.settle(&budgets[1..], u64::MAX, None);
    let r = ledger.report(&budgets);
    assert!(
        r.iter().all(|b| b.spent_usd == nanos_to_usd(u64::MAX)),
        "{r:?}"
    );
    assert!(
        ledger.reserve(&budgets, &s, 1).is_err(),
        "spend stuck at the top"
    );
}

#[tokio::test]
async fn a_corrupt_journal_refuses_to_open() {
    let dir = std::env::temp_dir().join(format!("sluice-ledger-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("state.jsonl");
    std::fs::write(
        &path,
        "{\"b\":\"g\",\"s\":\"\",\"w\":\"lifetime\",\"n\":5}\n}{\n",
    )
    .expect("w");
    let now = Arc::new(AtomicU64::new(T));
    let budgets = vec![rule(
        "g",
        vec![],
        Window::Lifetime,
        10,
        BudgetAction::Reject,
    )];
    let e = Ledger::open(&path, &budgets, UsageLog::off(), clock(&now)).expect_err("corrupt");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("line 2"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn past_the_cap_new_identities_share_the_overflow_bucket_and_idle_ones_are_swept() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    ledger.set_max_slots(5);
    let budgets = vec![rule(
        "b",
        vec![Dim::User],
        Window::Day,
        1000,
        BudgetAction::Reject,
    )];
    let mut charged = 0;
    for i in 0..100 {
        let id = who(&format!("u{i}"));
        let subject = Subject {
            identity: &id,
            model: "m",
        };
        if let Ok(h) = ledger.reserve(&budgets, &subject, 400) {
            h.settle(&budgets, 400, None);
            charged += 1;
        }
    }
    assert!(ledger.entries() <= 6, "{} buckets", ledger.entries());
    // Five identities own a bucket (400 each); the other 95 share one $1000
    // bucket, which lets two 400 charges through, not 95.
    assert_eq!(charged, 5 + 2);
    let overflow = ledger
        .report(&budgets)
        .into_iter()
        .find(|r| r.bucket == "b|~overflow")
        .expect("overflow bucket");
    assert_eq!(overflow.spent_usd, nanos_to_usd(800));
    // Asking whether to downgrade never creates a bucket.
    let id = who("someone-new");
    let subject = Subject {
        identity: &id,
        model: "m",
    };
    let before = ledger.entries();
    assert_eq!(ledger.downgrade(&budgets, &subject), None);
    assert_eq!(ledger.entries(), before);
    // Spend of the current day is kept; a day later the buckets go.
    assert_eq!(ledger.sweep(&budgets), before);
    now.store(T + 86_400, Ordering::SeqCst);
    assert_eq!(ledger.sweep(&budgets), 0);
}

#[test]
fn overrides_give_one_identity_its_own_limit_exempt_it_or_block_it() {
    let at = Arc::new(AtomicU64::new(1_800_000_000));
    let l = Ledger::in_memory(clock(&at));
    let mut b = rule(
        "daily",
        vec![Dim::User],
        Window::Day,
        1_000,
        BudgetAction::Reject,
    );
    b.overrides = crate::config::Config::parse(
        "[[budgets]]\nname = \"daily\"\nscope = [\"user\"]\nwindow = \"day\"\nlimit_usd = 1.0\n\
         overrides = { \"user=big\" = 0.00002, \"user=ops\" = \"unlimited\", \"user=gone\" = 0 }\n",
        "t",
        &|_| None,
    )
    .expect("valid")
    .budgets[0]
        .overrides
        .clone();
    let budgets = [b];
    fn subject(id: &Identity) -> Subject<'_> {
        Subject {
            identity: id,
            model: "m",
        }
    }
    let (plain, big, ops, gone) = (who("plain"), who("big"), who("ops"), who("gone"));
    // The default: 1,000 nano-dollars.
    let h = l.reserve(&budgets, &subject(&plain), 600).expect("fits");
    h.settle(&budgets, 600, None);
    assert!(l.reserve(&budgets, &subject(&plain), 600).is_err());
    // Its own: 20,000 (22 × 900 fit, the 23rd does not).
    for _ in 0..22 {
        let h = l
            .reserve(&budgets, &subject(&big), 900)
            .expect("fits the override");
        assert_eq!(h.remaining.map(|r| r <= 20_000), Some(true));
        h.settle(&budgets, 900, None);
    }
    let e = l
        .reserve(&budgets, &subject(&big), 900)
        .expect_err("19,800 + 900 > 20,000");
    assert_eq!(e.limit, 20_000);
    // Exempt: never refused, nothing held.
    let h = l
        .reserve(&budgets, &subject(&ops), u64::MAX / 2)
        .expect("exempt");
    assert_eq!(h.remaining, None);
    // Blocked.
    assert_eq!(
        l.reserve(&budgets, &subject(&gone), 1)
            .expect_err("blocked")
            .limit,
        0
    );
    let report = l.report(&budgets);
    let row = report
        .iter()
        .find(|r| r.bucket == "daily|user=big")
        .expect("row");
    assert!(row.overridden);
    assert!((row.limit_usd - 0.00002).abs() < 1e-12);
}

#[test]
fn a_forced_charge_is_never_refused_and_later_requests_are() {
    let now = Arc::new(AtomicU64::new(T));
    let ledger = Ledger::in_memory(clock(&now));
    let mut only_m = rule(
        "m",
        vec![Dim::User],
        Window::Day,
        1000,
        BudgetAction::Reject,
    );
    only_m.models = Some(vec!["m".into()]);
    let budgets = vec![only_m];
    let id = who("a");
    let on = |model| Subject {
        identity: &id,
        model,
    };
    // 1500 on model m (past the limit of 1000), 700 on a model no budget covers.
    let crossed = ledger.force(&budgets, &[(on("m"), 1500), (on("other"), 700)], Vec::new());
    assert_eq!(
        crossed,
        vec![
            ("m".to_owned(), "m|user=a".to_owned(), 500),
            ("m".to_owned(), "m|user=a".to_owned(), 1000)
        ]
    );
    let report = ledger.report(&budgets);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].spent_usd, nanos_to_usd(1500));
    assert!(ledger.reserve(&budgets, &on("m"), 1).is_err());
    assert!(ledger.reserve(&budgets, &on("other"), 1).is_ok());
}

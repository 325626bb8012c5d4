//! What fleet mode decides without Redis: the fail-open limits, reading a
//! take script's refusal, the downgrade view and the bounded owed spend.
//! The scripts themselves run against a real redis-server in tests/fleet.rs.

use std::time::Duration;

use super::*;
use crate::config::{BudgetAction, Dim, OnUnavailable};
use crate::vocab::Identity;
use crate::window::Window;

fn budget(name: &str, limit: Nanos, action: BudgetAction) -> BudgetRule {
    BudgetRule {
        name: name.into(),
        scope: vec![Dim::User],
        window: Window::Day,
        limit,
        action,
        downgrade_to: Some("cheap".into()),
        downgrade_permille: 800,
        alert_permille: vec![],
        models: None,
        webhook: None,
        overrides: Default::default(),
    }
}

fn rule(rpm: Option<u64>, tpm: Option<u64>, conc: Option<u64>) -> RateRule {
    RateRule {
        name: "r".into(),
        scope: vec![Dim::Team],
        models: None,
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        max_concurrent: conc,
        overrides: Default::default(),
    }
}

fn who(user: &str) -> Identity {
    Identity {
        user: Some(user.into()),
        team: Some("t".into()),
        ..Identity::default()
    }
}

#[test]
fn fail_open_limits_are_a_share_rounded_up_never_zero() {
    let rules = [rule(Some(1000), Some(99_999), Some(3))];
    let budgets = [budget("b", 1_000_000, BudgetAction::Reject)];
    let l = LocalLimits::scaled(&rules, &budgets, 100);
    assert_eq!(l.rate_limits[0].requests_per_minute, Some(100));
    assert_eq!(l.rate_limits[0].tokens_per_minute, Some(10_000));
    assert_eq!(
        l.rate_limits[0].max_concurrent,
        Some(1),
        "0.3 rounds up to 1"
    );
    assert_eq!(l.budgets[0].limit, 100_000);
    let all = LocalLimits::scaled(&rules, &budgets, 1000);
    assert_eq!(all.rate_limits, rules);
    assert_eq!(all.budgets, budgets);
}

#[test]
fn a_refusal_names_the_rule_or_budget_the_script_pointed_at() {
    let id = who("alice");
    let subject = Subject {
        identity: &id,
        model: "m",
    };
    let rates = rate_parts(
        &[rule(Some(10), None, None), rule(None, Some(500), None)],
        &subject,
    );
    let budgets = budget_parts(&[budget("b", 5_000, BudgetAction::Reject)], &subject, 700);
    assert_eq!(budgets[0].bucket, "b|user=alice");
    match refusal(
        &[0, 2, 2, 500, 450, 1500, 0],
        &rates,
        &budgets,
        60,
        Some(700),
    ) {
        Refusal::Rate(r) => {
            assert_eq!(r.kind, LimitKind::Tokens);
            assert_eq!((r.limit, r.requested), (500, 60));
            assert_eq!(r.retry_after, Duration::from_millis(1500));
            assert!(!r.never_fits);
        }
        other => panic!("{other:?}"),
    }
    match refusal(&[0, 4, 1, 0, 4_600, 0, 0], &rates, &budgets, 60, Some(700)) {
        Refusal::Budget(e) => {
            assert_eq!(
                (e.budget.as_str(), e.bucket.as_str()),
                ("b", "b|user=alice")
            );
            assert_eq!((e.limit, e.spent, e.requested), (5_000, 4_600, 700));
        }
        other => panic!("{other:?}"),
    }
    // An index the request never sent is not trusted.
    assert!(matches!(
        refusal(&[0, 1, 9, 1, 1, 1, 0], &rates, &budgets, 60, None),
        Refusal::Unavailable
    ));
}

#[test]
fn downgrades_follow_the_use_last_seen_in_the_current_window() {
    let seen = seen::Seen::default();
    let budgets = [budget("b", 1_000, BudgetAction::Downgrade)];
    let id = who("alice");
    let subject = Subject {
        identity: &id,
        model: "m",
    };
    let now = 1_800_000_000;
    assert_eq!(seen.downgrade(&budgets, &subject, now), None);
    seen.note("b|user=alice", Window::Day.key(now), 799);
    assert_eq!(seen.downgrade(&budgets, &subject, now), None);
    seen.note("b|user=alice", Window::Day.key(now), 800);
    assert_eq!(
        seen.downgrade(&budgets, &subject, now).as_deref(),
        Some("cheap")
    );
    // The next day starts afresh.
    assert_eq!(seen.downgrade(&budgets, &subject, now + 86_400), None);
}

#[test]
fn the_downgrade_view_stays_bounded() {
    let seen = seen::Seen::default();
    for i in 0..seen::MAX_SEEN + 10 {
        seen.note(&format!("b|user={i}"), crate::window::Window::Day.key(0), 1);
    }
    assert!(seen.len() <= seen::MAX_SEEN);
}

#[tokio::test]
async fn owed_spend_adds_up_and_stays_bounded() {
    // Never connects: the client is lazy and nothing is asked of it.
    let cfg = RedisState {
        url: "redis://127.0.0.1:1/0".into(),
        key_prefix: "t:".into(),
        timeout: Duration::from_millis(50),
        on_unavailable: OnUnavailable::FailOpen,
        fail_open_share: 100,
        ca_file: None,
    };
    let fleet = Fleet::start(
        &cfg,
        Default::default(),
        Default::default(),
        Default::default(),
    )
    .expect("lazy client");
    let budgets = [budget("b", 1_000, BudgetAction::Reject)];
    let id = who("alice");
    let subject = Subject {
        identity: &id,
        model: "m",
    };
    let attribution = [("user", "alice".to_owned())];
    fleet.owe(&budgets, &subject, &attribution, 30);
    fleet.owe(&budgets, &subject, &attribution, 12);
    assert_eq!(
        fleet.owed.total(),
        (1, 1, 84),
        "42 at the budget, 42 for alice"
    );
    for i in 0..owed::MAX_OWED {
        let id = who(&format!("u{i}"));
        let subject = Subject {
            identity: &id,
            model: "m",
        };
        fleet.owe(&budgets, &subject, &[], 1);
    }
    let (b, s, _) = fleet.owed.total();
    assert_eq!(b + s, owed::MAX_OWED);
}

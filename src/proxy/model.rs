//! Which model a request is served by: the allow-list on the model asked
//! for, a routing model's tier rules (e.g. `auto`), a budget's downgrade to
//! a cheaper model, and the allow-list again on the model chosen.

use bytes::Bytes;
use http::HeaderMap;

use crate::app::{App, Snapshot};
use crate::auth::{Credential, VirtualKey};
use crate::error::ProxyError;
use crate::limits::rate;
use crate::limits::tokens::Family;
use crate::record::RequestRecord;
use crate::sniff::Sniffed;

use super::stages::choose_tier;

/// The model chosen, and an input count tier routing made on the way.
pub(super) struct Chosen {
    pub model: String,
    pub counted: Option<(Family, u64)>,
    /// The experiment arm serving the request (its index in the config):
    /// its parameters and system prefix apply.
    pub arm: Option<usize>,
}

/// The allow-list holds for the model asked for (for a routing model, for
/// the model it routes to).
pub(super) fn check_asked(
    snap: &Snapshot,
    vk: Option<&VirtualKey>,
    s: &Sniffed,
) -> Result<(), ProxyError> {
    if snap.router.tier(&s.model).is_none() && vk.is_some_and(|k| !k.allows(&s.model)) {
        return Err(ProxyError::ModelNotAllowed {
            model: s.model.clone(),
        });
    }
    Ok(())
}

/// Tier routing, then a budget downgrade, then the allow-list on the result.
pub(super) fn choose(
    app: &App,
    snap: &Snapshot,
    cred: &Credential,
    headers: &HeaderMap,
    body: &Bytes,
    s: &Sniffed,
    rec: &mut RequestRecord,
) -> Result<Chosen, ProxyError> {
    let vk = match cred {
        Credential::Virtual(vk) => Some(vk.as_ref()),
        Credential::Passthrough { .. } => None,
    };
    // Header rules count only where identity headers are trusted, or the key
    // is allowed to choose its tier.
    let mut counted = None;
    let no_headers = HeaderMap::new();
    let tier_headers = if snap.keys.trusts_headers() || vk.is_some_and(|k| k.tier_headers) {
        headers
    } else {
        &no_headers
    };
    let mut arm = None;
    let model = match snap.router.tier(&s.model) {
        None => match snap.experiment(&s.model) {
            None => s.model.clone(),
            Some(e) => {
                let index = split(app, snap, e, headers, rec);
                arm = Some(index);
                let to = e.arms[index].model.clone();
                rec.facts.routed_to = Some(to.clone());
                to
            }
        },
        Some(tier) => {
            let chosen = choose_tier(snap, tier, cred, tier_headers, rec, body, s, &mut counted);
            rec.facts.routed_to = Some(chosen.clone());
            chosen
        }
    };
    // Budgets past a downgrade threshold send the request to a cheaper
    // model, when the key may use it.
    let subject = rate::Subject {
        identity: &rec.facts.identity,
        model: &s.model,
    };
    let downgrade = match &app.fleet {
        Some(fleet) => fleet.downgrade(&snap.config.budgets, &subject),
        None => app.ledger.downgrade(&snap.config.budgets, &subject),
    };
    let model = match downgrade {
        Some(cheaper) if cheaper != model && vk.is_none_or(|k| k.allows(&cheaper)) => {
            tracing::debug!(from = %model, to = %cheaper, "budget downgrade");
            rec.facts.routed_to = Some(cheaper.clone());
            cheaper
        }
        _ => model,
    };
    let model = killed(app, snap, &s.model, model, rec)?;
    // An arm's model is allowed wherever the experiment's name is.
    let arm_model = arm
        .and_then(|i| snap.experiment(&s.model)?.arms.get(i))
        .is_some_and(|a| a.model == model);
    if !arm_model && vk.is_some_and(|k| !k.allows(&model)) {
        return Err(ProxyError::ModelNotAllowed { model });
    }
    Ok(Chosen {
        model,
        counted,
        arm,
    })
}

/// The arm of experiment `e` this request lands in (recorded when the
/// caller takes part; one without a sticky id gets the control, outside
/// the experiment's statistics).
fn split(
    app: &App,
    snap: &Snapshot,
    e: &crate::config::Experiment,
    headers: &HeaderMap,
    rec: &mut RequestRecord,
) -> usize {
    let switches = &snap.config.kill_switches;
    let killed = |arm: &str| app.kills.for_arm(switches, &e.name, arm).is_some();
    match app
        .experiments
        .pick(e, &rec.facts.identity, headers, &killed)
    {
        Some(pick) => {
            let index = pick.index;
            rec.facts.arm = Some(pick);
            index
        }
        None => e.control,
    }
}

/// A kill switch on the model asked for or chosen refuses the request, or
/// sends it to the switch's replacement.
fn killed(
    app: &App,
    snap: &Snapshot,
    asked: &str,
    model: String,
    rec: &mut RequestRecord,
) -> Result<String, ProxyError> {
    let config = &snap.config.kill_switches;
    let switch = app
        .kills
        .for_model(config, &model)
        .or_else(|| app.kills.for_model(config, asked));
    let Some(switch) = switch else {
        return Ok(model);
    };
    match switch.replacement {
        Some(to) => {
            crate::metrics::killed("model_replaced");
            tracing::debug!(from = %model, to = %to, "kill switch: model replaced");
            rec.facts.routed_to = Some(to.clone());
            Ok(to)
        }
        None => {
            crate::metrics::killed("model");
            Err(ProxyError::Disabled {
                kind: "model",
                value: switch.target.value().to_owned(),
                reason: switch.reason,
            })
        }
    }
}

/// The body as the arm sends it (unchanged outside experiments, or for an
/// arm without parameters or prefix), sniffed again when it changed.
pub(super) fn arm_overrides(
    snap: &Snapshot,
    arm: Option<usize>,
    body: Bytes,
    s: Sniffed,
    endpoint: crate::vocab::Endpoint,
) -> Result<(Bytes, Sniffed), ProxyError> {
    let Some(arm) = arm.and_then(|i| snap.experiment(&s.model)?.arms.get(i)) else {
        return Ok((body, s));
    };
    if !crate::experiment::overrides::changes(arm) {
        return Ok((body, s));
    }
    let body = crate::experiment::overrides::apply(body, arm, endpoint)?;
    let s = crate::sniff::sniff(&body, endpoint)?;
    Ok((body, s))
}

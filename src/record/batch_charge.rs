//! A batch read-back's charge (see [`crate::batch`]): in the usage record
//! of the read, in the cost metrics, and at every budget that applies to
//! the reading key (which ownership guarantees created the batch), per
//! model, as a settle that cannot be refused.

use serde::Serialize;

use super::RequestRecord;
use crate::batch::Charge;
use crate::limits::rate::Subject;
use crate::metrics;
use crate::pricing::nanos_to_usd;

/// The `batch` object of a read-back's usage record.
#[derive(Serialize)]
pub struct BatchLine<'a> {
    /// The output file or Anthropic batch read.
    pub id: &'a str,
    /// Lines read.
    pub lines: u64,
    /// Succeeded requests this read charged.
    pub charged: u64,
    /// Succeeded requests an earlier read charged.
    pub already_charged: u64,
    /// Errored, expired and canceled requests (not billed).
    pub not_charged: u64,
    /// Lines too long or unreadable.
    pub skipped: u64,
    pub models: Vec<ModelLine<'a>>,
}

/// What a read charged for one model.
#[derive(Serialize)]
pub struct ModelLine<'a> {
    pub model: &'a str,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub priced: bool,
}

impl<'a> BatchLine<'a> {
    pub fn of(c: &'a Charge) -> BatchLine<'a> {
        BatchLine {
            id: &c.object,
            lines: c.lines,
            charged: c.charged,
            already_charged: c.already,
            not_charged: c.not_charged,
            skipped: c.skipped,
            models: c
                .models
                .iter()
                .map(|m| ModelLine {
                    model: &m.model,
                    requests: m.requests,
                    input_tokens: m.usage.input,
                    output_tokens: m.usage.output,
                    cost_usd: nanos_to_usd(m.cost),
                    priced: m.priced,
                })
                .collect(),
        }
    }
}

/// The one model a read charged, for the record's `upstream_model`.
pub fn only_model(c: &Charge) -> Option<&str> {
    match c.models.as_slice() {
        [m] => Some(&m.model),
        _ => None,
    }
}

impl RequestRecord {
    /// Cost and token metrics by the models the read charged, and the
    /// spend attribution of its total.
    pub(super) fn batch_metrics(&self, c: &Charge) {
        for m in &c.models {
            let label = match &self.snap {
                Some(snap) => snap.router.model_label(&m.model),
                None => crate::route::OTHER_MODEL,
            };
            metrics::usage(label, Some(&m.usage), Some(m.cost));
        }
        metrics::batch_lines("charged", c.charged);
        metrics::batch_lines("already_charged", c.already);
        metrics::batch_lines("not_charged", c.not_charged);
        metrics::batch_lines("skipped", c.skipped);
        if let (Some(l), true) = (&self.ledger, c.cost() > 0) {
            l.attribute(&self.facts.identity, c.cost());
        }
    }

    /// Charges the read to every budget that applies, model by model,
    /// without a limit check (the provider has billed it already), and
    /// writes the usage `line` once the charge is durable. Fleet mode: owed
    /// to Redis, which is paid as soon as it answers.
    pub(super) fn charge_batch(&mut self, c: &Charge, line: Vec<u8>) {
        let Some(snap) = self.snap.clone() else {
            self.sink.write_raw(line);
            return;
        };
        let budgets = &snap.config.budgets;
        let on = |model| Subject {
            identity: &self.facts.identity,
            model,
        };
        let charges: Vec<_> = c.models.iter().map(|m| (on(&m.model), m.cost)).collect();
        let fleet = match (&self.holds.fleet, &self.holds.owed_to) {
            (Some(hold), _) => Some(hold.fleet().clone()),
            (None, Some(fleet)) => Some(fleet.clone()),
            (None, None) => None,
        };
        if let Some(fleet) = fleet {
            let attribution = self.attribution();
            // A fleet hold settles the attribution itself; a debt carries it.
            let owed_attribution = if self.holds.fleet.is_some() {
                &[][..]
            } else {
                &attribution[..]
            };
            for (subject, cost) in &charges {
                fleet.owe(budgets, subject, owed_attribution, *cost);
            }
            self.holds.owed_to = None;
            match self.holds.fleet.take() {
                Some(hold) => {
                    let sink = self.sink.clone();
                    hold.settle(
                        0,
                        c.cost(),
                        attribution,
                        Box::new(move |_| sink.write_raw(line)),
                    );
                }
                None => self.sink.write_raw(line),
            }
            return;
        }
        match &self.ledger {
            Some(ledger) => {
                let crossed = ledger.force(budgets, &charges, line);
                for (budget, bucket, t) in crossed {
                    if let Some(rule) = budgets.iter().find(|b| b.name == budget) {
                        crate::budget::alert::fire(rule, &bucket, t);
                    }
                }
            }
            None => self.sink.write_raw(line),
        }
    }
}

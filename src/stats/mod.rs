//! Statistics for A/B experiments and canaries: per-arm running samples and
//! comparisons of a candidate arm against the control that stay valid however
//! often they are looked at.
//!
//! A leaf: it depends on no other Sluice module, only on std, serde and
//! `sketches-ddsketch`. The experiment code keeps one [`ArmStats`] per arm
//! (behind its own lock) and calls the pure functions here:
//!
//! - [`ArmStats::record`] on every finished request; [`ArmStats::snapshot`]
//!   for the admin view;
//! - [`compare`] for one metric, candidate against control: the difference,
//!   an always-valid confidence interval and p-value, and a [`Decision`]
//!   (the mixture sequential probability ratio test of Johari, Pekelis &
//!   Walsh, "Always valid inference", in `sequential`);
//! - [`plan`]: how many more requests per arm before an effect of a given
//!   size would be detected;
//! - [`check_guards`]: whether a rollback guard is breached, and why.
//!
//! Every compared metric is "lower is better" (errors, latency, cost), so a
//! positive difference (candidate minus control) means the candidate is worse.

mod arm;
mod guard;
mod moments;
mod normal;
mod plan;
mod sequential;

#[cfg(test)]
mod simulation;

pub use arm::{ArmSnapshot, ArmStats, LatencySummary, Observation, Summary};
pub use guard::{check_guards, Breach, Guard, GuardConfig};
pub use moments::Moments;
pub use normal::inverse_normal_cdf;
pub use plan::{plan, Effect, Plan};
pub use sequential::{compare, compare_samples, Comparison, Decision, Metric, Sample, TestConfig};

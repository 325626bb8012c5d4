//! `[[shadows]]`: a share of a model's requests mirrored to a shadow model
//! whose answers are only recorded and compared (the live side is
//! `crate::shadow`).

use serde::Deserialize;

use super::raw::RawConfig;
use super::{ModelRule, Validator};

/// The most shadows one config may hold (names are metric labels).
pub const MAX_SHADOWS: usize = 16;
/// The most shadow requests in flight per shadow, at most.
pub const MAX_SHADOW_IN_FLIGHT: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub name: String,
    pub model: String,
    pub shadow_model: String,
    pub percent: Option<f64>,
    pub features: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub max_usd_per_day: Option<f64>,
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Shadow {
    pub name: String,
    /// The model clients ask for (a glob).
    pub model: String,
    /// Where the copy goes (a name a `[[models]]` rule serves).
    pub shadow_model: String,
    /// Share of the matching requests mirrored, 0–100.
    pub percent: f64,
    /// Only these features (`None`: all).
    pub features: Option<Vec<String>>,
    /// Only these keys (`None`: all).
    pub keys: Option<Vec<String>>,
    /// The shadow's own spend cap per UTC day, in nano-dollars.
    pub max_per_day: Option<crate::pricing::Nanos>,
    /// Copies in flight at once; past it a copy is dropped and counted.
    pub max_in_flight: usize,
}

impl Validator<'_> {
    pub(super) fn shadows(&mut self, raw: &RawConfig, models: &[ModelRule]) -> Vec<Shadow> {
        if raw.shadows.len() > MAX_SHADOWS {
            self.err("shadows", format!("at most {MAX_SHADOWS} shadows"));
        }
        let mut out: Vec<Shadow> = Vec::new();
        for (i, r) in raw.shadows.iter().enumerate() {
            let f = format!("shadows[{i}]");
            if !super::experiments::label_ok(&r.name) {
                self.err(
                    &format!("{f}.name"),
                    "1–64 characters of letters, digits, '-', '_' or '.'",
                );
            }
            if out.iter().any(|o| o.name == r.name) {
                self.err(&format!("{f}.name"), format!("{:?} used twice", r.name));
            }
            if !models
                .iter()
                .any(|m| crate::glob::glob_match(&m.pattern, &r.shadow_model))
            {
                self.err(
                    &format!("{f}.shadow_model"),
                    format!("{:?} matches no [[models]] rule", r.shadow_model),
                );
            }
            let percent = r.percent.unwrap_or(100.0);
            if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
                self.err(&format!("{f}.percent"), "from 0 to 100");
            }
            let max_in_flight = r.max_in_flight.unwrap_or(16);
            if max_in_flight == 0 || max_in_flight > MAX_SHADOW_IN_FLIGHT {
                self.err(
                    &format!("{f}.max_in_flight"),
                    format!("from 1 to {MAX_SHADOW_IN_FLIGHT}"),
                );
            }
            let max_per_day = r.max_usd_per_day.map(|usd| {
                if !(usd.is_finite() && usd >= 0.0) {
                    self.err(&format!("{f}.max_usd_per_day"), "zero or more");
                }
                crate::pricing::usd_to_nanos(usd.max(0.0))
            });
            out.push(Shadow {
                name: r.name.clone(),
                model: r.model.clone(),
                shadow_model: r.shadow_model.clone(),
                percent,
                features: r.features.clone(),
                keys: r.keys.clone(),
                max_per_day,
                max_in_flight: max_in_flight.clamp(1, MAX_SHADOW_IN_FLIGHT),
            });
        }
        out
    }
}

//! Fleet-wide rollout state of experiments: one Redis hash (experiment →
//! its rollout as JSON), written when a replica's rollout changes (a guard's
//! rollback, a ramp step, an admin call) and read by every replica's probe
//! each second, so a rollback on any replica holds on all of them within a
//! second and survives restarts with Redis's data. Per-arm statistics stay
//! per replica.

use super::Fleet;
use crate::config::MAX_EXPERIMENTS;
use crate::experiment::RampState;

impl Fleet {
    fn experiments_key(&self) -> String {
        format!("{}experiments", self.keys.prefix())
    }

    /// Writes rollout states for the fleet.
    pub async fn save_experiments(&self, states: &[RampState]) -> Result<(), String> {
        if states.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.experiments_key());
        for s in states.iter().take(MAX_EXPERIMENTS) {
            cmd.arg(&s.name)
                .arg(serde_json::to_string(s).map_err(|e| e.to_string())?);
        }
        let mut conn = self.conn.clone();
        let write = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("redis timed out".into()),
        }
    }

    /// Reads the fleet's rollout states into this replica's experiments.
    pub(super) async fn refresh_experiments(&self) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.experiments_key());
        let read = cmd.query_async::<Vec<(String, String)>>(&mut conn);
        if let Ok(Ok(rows)) = tokio::time::timeout(self.timeout, read).await {
            let states: Vec<RampState> = rows
                .iter()
                .take(MAX_EXPERIMENTS * 4)
                .filter_map(|(_, json)| serde_json::from_str(json).ok())
                .collect();
            self.experiments.adopt(states);
        }
    }
}

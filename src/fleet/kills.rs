//! Fleet-wide kill switches: one Redis hash (target → switch as JSON) that
//! every replica's probe reads each second, so a switch set through any
//! replica's admin API holds on all of them within a second and survives
//! restarts with Redis's data.

use super::Fleet;
use crate::kill::{Switch, Target, MAX_SWITCHES};

fn field(target: &Target) -> String {
    format!("{}={}", target.label(), target.value())
}

impl Fleet {
    fn kills_key(&self) -> String {
        format!("{}kills", self.keys.prefix())
    }

    /// Turns a target off for the fleet.
    pub async fn kill(&self, switch: &Switch) -> Result<(), String> {
        let json = serde_json::to_string(switch).map_err(|e| e.to_string())?;
        let mut conn = self.conn.clone();
        let n: usize = redis::cmd("HLEN")
            .arg(self.kills_key())
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if n >= MAX_SWITCHES {
            return Err(format!("at most {MAX_SWITCHES} kill switches"));
        }
        let _: i64 = redis::cmd("HSET")
            .arg(self.kills_key())
            .arg(field(&switch.target))
            .arg(json)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        self.kills.note_fleet(Some(switch.clone()), &switch.target);
        Ok(())
    }

    /// Turns a target back on for the fleet; `false` when it was not off.
    pub async fn unkill(&self, target: &Target) -> Result<bool, String> {
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(self.kills_key())
            .arg(field(target))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        self.kills.note_fleet(None, target);
        Ok(removed > 0)
    }

    /// Reads the fleet's switches into this replica's copy.
    pub(super) async fn refresh_kills(&self) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.kills_key());
        let read = cmd.query_async::<Vec<(String, String)>>(&mut conn);
        if let Ok(Ok(rows)) = tokio::time::timeout(self.timeout, read).await {
            let switches = rows
                .iter()
                .take(MAX_SWITCHES)
                .filter_map(|(_, json)| serde_json::from_str::<Switch>(json).ok())
                .collect();
            self.kills.set_fleet(switches);
        }
    }
}

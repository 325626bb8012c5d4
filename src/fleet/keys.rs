//! Fleet-wide runtime virtual keys: one Redis hash (SHA-256 → the issued
//! key as JSON, never its secret) that every replica's probe reads each
//! second, so a key issued, rotated or revoked through any replica holds on
//! all of them within a second (at once on that replica).

use super::Fleet;
use crate::key_store::{IssuedKey, MAX_KEYS};

impl Fleet {
    fn keys_key(&self) -> String {
        format!("{}keys", self.keys.prefix())
    }

    /// Stores (or replaces) issued keys, removes `revoked` (digests), and
    /// refreshes this replica's copy.
    pub async fn write_keys(&self, put: &[IssuedKey], revoked: &[String]) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in put {
            let json = serde_json::to_string(k).map_err(|e| e.to_string())?;
            pipe.cmd("HSET")
                .arg(self.keys_key())
                .arg(&k.sha256)
                .arg(json)
                .ignore();
        }
        for sha in revoked {
            pipe.cmd("HDEL").arg(self.keys_key()).arg(sha).ignore();
        }
        let () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        self.refresh_issued_keys().await;
        Ok(())
    }

    /// Reads the fleet's keys into this replica's copy.
    pub(super) async fn refresh_issued_keys(&self) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys_key());
        let read = cmd.query_async::<Vec<(String, String)>>(&mut conn);
        if let Ok(Ok(rows)) =
            tokio::time::timeout(self.timeout.max(super::SETTLE_TIMEOUT), read).await
        {
            let keys = rows
                .iter()
                .take(MAX_KEYS)
                .filter_map(|(_, json)| serde_json::from_str::<IssuedKey>(json).ok())
                .collect();
            self.issued_keys.replace(keys);
        }
    }
}

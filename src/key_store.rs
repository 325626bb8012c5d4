//! Virtual keys issued at runtime by the admin API, beside the ones in the
//! config: created (the key is shown once; only its SHA-256 is kept), listed,
//! rotated (old and new both valid for a grace period) and revoked, each
//! change logged with who and when. Kept in a file beside the state file
//! (written whole, then renamed), or in Redis in fleet mode (every replica
//! reads them each second; see `fleet::keys`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// The most runtime keys kept.
pub const MAX_KEYS: usize = 100_000;

/// One issued key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    pub name: String,
    /// SHA-256 of the key, hex.
    pub sha256: String,
    pub user: Option<String>,
    pub team: Option<String>,
    /// Allowed public models (globs); `None`: all.
    pub models: Option<Vec<String>>,
    /// Unix seconds; after it the key is refused.
    pub expires_at: Option<u64>,
    pub created_at: u64,
    pub created_by: String,
}

impl IssuedKey {
    fn digest(&self) -> Option<[u8; 32]> {
        let mut d = [0u8; 32];
        hex::decode_to_slice(&self.sha256, &mut d).ok()?;
        Some(d)
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// The runtime keys, by the SHA-256 of their secret.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_hash: RwLock<HashMap<[u8; 32], IssuedKey>>,
    path: Option<PathBuf>,
}

/// A new key's secret: `sk-sluice-` and 32 random bytes, hex.
pub fn new_secret() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no system randomness".to_owned())?;
    Ok(format!("sk-sluice-{}", hex::encode(bytes)))
}

impl KeyStore {
    /// Loads the keys persisted at `path` (none if it does not exist).
    pub fn open(path: &Path) -> std::io::Result<KeyStore> {
        let keys: Vec<IssuedKey> = crate::json_file::load_list(path)?;
        let store = KeyStore {
            by_hash: RwLock::default(),
            path: Some(path.to_owned()),
        };
        store.replace(keys);
        Ok(store)
    }

    /// Replaces every key (what Redis holds, in fleet mode).
    pub fn replace(&self, keys: Vec<IssuedKey>) {
        let map = keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|k| Some((k.digest()?, k)))
            .collect();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// The live key with this digest.
    pub fn lookup(&self, digest: &[u8; 32], now: u64) -> Option<IssuedKey> {
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        map.get(digest).filter(|k| !k.expired(now)).cloned()
    }

    pub fn list(&self) -> Vec<IssuedKey> {
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<IssuedKey> = map.values().cloned().collect();
        keys.sort_by(|a, b| (&a.name, a.created_at).cmp(&(&b.name, b.created_at)));
        keys
    }

    /// Applies `change` to the keys and persists them (the file mode).
    pub fn update(
        &self,
        change: impl FnOnce(&mut HashMap<[u8; 32], IssuedKey>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut map = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        change(&mut map)?;
        if map.len() > MAX_KEYS {
            return Err(format!("at most {MAX_KEYS} runtime keys"));
        }
        let Some(path) = &self.path else {
            return Ok(());
        };
        let keys: Vec<&IssuedKey> = map.values().collect();
        crate::json_file::save(path, &keys)
    }
}

/// Inserts `key` (its digest must be new).
pub fn insert(map: &mut HashMap<[u8; 32], IssuedKey>, key: IssuedKey) -> Result<(), String> {
    let d = key.digest().ok_or("bad digest")?;
    map.insert(d, key);
    Ok(())
}

//! Small JSON files of runtime state kept beside the state file (kill
//! switches, issued keys): read whole at start, written whole and renamed
//! into place, so a crash leaves the old file or the new one, never half.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The list stored at `path` (empty if the file does not exist).
pub fn load_list<T: DeserializeOwned>(path: &Path) -> std::io::Result<Vec<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `value` to a temporary file, syncs it and renames it over `path`.
pub fn save(path: &Path, value: &impl Serialize) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

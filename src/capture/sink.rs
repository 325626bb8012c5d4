//! The capture file: JSON lines appended to `path`; a file past
//! `max_file_bytes` is renamed `path.<unix ms>` and a new one started, and
//! the rotated files are deleted oldest first while all of them together
//! are over `max_total_bytes`. Plain blocking I/O: it runs on the writer's
//! own thread.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Size bounds of the files.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

/// The file being written and its size.
pub struct Sink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
}

impl Sink {
    pub fn new(path: PathBuf) -> Sink {
        Sink {
            path,
            out: None,
            size: 0,
        }
    }

    fn open(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.out = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        match self.out.as_mut() {
            Some(o) => Ok(o),
            None => Err(std::io::Error::other("capture file not open")),
        }
    }

    /// Appends one line (`line` ends with a newline), rotating first when
    /// it would take the file past its bound.
    pub fn write(&mut self, line: &[u8], bounds: Bounds) -> std::io::Result<()> {
        self.open()?;
        if self.size > 0 && self.size + line.len() as u64 > bounds.max_file_bytes {
            self.rotate(bounds)?;
        }
        let out = self.open()?;
        out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }

    /// Renames the current file aside and deletes the oldest rotated files
    /// past the total bound.
    fn rotate(&mut self, bounds: Bounds) -> std::io::Result<()> {
        if let Some(mut o) = self.out.take() {
            o.flush()?;
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut aside = rotated_name(&self.path, ms, 0);
        let mut n = 0;
        while aside.exists() {
            n += 1;
            aside = rotated_name(&self.path, ms, n);
        }
        std::fs::rename(&self.path, &aside)?;
        self.size = 0;
        // The new file starts empty: the rotated ones may have all of the total.
        prune(
            &self.path,
            bounds.max_total_bytes.saturating_sub(bounds.max_file_bytes),
        )?;
        Ok(())
    }
}

/// `path.<ms>` (zero-padded so names sort by age), `.N` when two rotations
/// fall in one millisecond.
fn rotated_name(path: &Path, ms: u128, n: u32) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "capture.jsonl".into(), |n| n.to_string_lossy());
    let suffix = if n == 0 {
        format!("{ms:015}")
    } else {
        format!("{ms:015}.{n}")
    };
    path.with_file_name(format!("{name}.{suffix}"))
}

/// The rotated files of `path`, oldest first, with their sizes.
pub fn rotated(path: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit() || c == '.') {
            continue;
        }
        out.push((entry.path(), entry.metadata()?.len()));
    }
    out.sort();
    Ok(out)
}

/// Deletes the oldest rotated files until the rest fit in `budget` bytes.
fn prune(path: &Path, budget: u64) -> std::io::Result<()> {
    let files = rotated(path)?;
    let mut total: u64 = files.iter().map(|(_, n)| n).sum();
    for (p, n) in files {
        if total <= budget {
            break;
        }
        std::fs::remove_file(&p)?;
        total -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_total_bounded() {
        let dir = std::env::temp_dir().join(format!("sluice-capture-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("capture.jsonl");
        let bounds = Bounds {
            max_file_bytes: 1000,
            max_total_bytes: 3000,
        };
        let mut sink = Sink::new(path.clone());
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..200 {
            sink.write(&line, bounds).expect("write");
        }
        sink.flush().expect("flush");
        let current = std::fs::metadata(&path).expect("current").len();
        let rotated = rotated(&path).expect("list");
        let total = current + rotated.iter().map(|(_, n)| n).sum::<u64>();
        assert!(total <= 3000, "{total}");
        assert!(current <= 1000);
        assert!(!rotated.is_empty());
        assert!(rotated.iter().all(|(_, n)| *n <= 1000));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

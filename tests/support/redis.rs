//! A private `redis-server` for one test: its own free loopback port and its
//! own directory, with the AOF settings the fleet docs rely on
//! (`appendonly yes`, `appendfsync everysec`, no RDB snapshots).
//!
//! Include it the way harness.rs is included:
//! `#[path = "support/redis.rs"] mod redis;`.
//!
//! The fixture speaks raw RESP over a `TcpStream` (no client crate): the tests
//! only need PING, SHUTDOWN and the odd assertion. Its calls are blocking and
//! short; they run on the test's thread.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How long a start or a stop may take before the fixture gives up.
const PATIENCE: Duration = Duration::from_secs(10);

/// A running (or stopped) private redis-server.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// A redis.conf to start from (deploy/k8s/redis.yaml's), instead of the
    /// fixture's own persistence flags.
    conf: Option<PathBuf>,
    /// `requirepass`; the fixture's own commands AUTH with it.
    password: Option<String>,
}

/// One RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A flat text form for assertions: strings as they are, integers in
    /// decimal, nil as `(nil)`, arrays one element per line, errors `-ERR ...`.
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Error(e) => format!("-{e}"),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".to_owned(),
            Reply::Array(Some(items)) => {
                items.iter().map(Reply::text).collect::<Vec<_>>().join("\n")
            }
        }
    }
}

impl RedisServer {
    /// Starts redis-server on a free 127.0.0.1 port in a fresh directory and
    /// waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_from(None, None)
    }

    /// Like [`start`](Self::start), with `requirepass PASSWORD`.
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_from(None, Some(password))
    }

    /// Starts redis-server on the configuration file text `conf`, with only
    /// the port, bind address and directory overridden (so the file's own
    /// persistence and memory settings are what runs).
    pub fn start_with_config(conf: &str) -> RedisServer {
        Self::start_from(Some(conf), None)
    }

    fn start_from(conf: Option<&str>, password: Option<&str>) -> RedisServer {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sluice-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis temp dir");
        let conf = conf.map(|text| {
            let path = dir.join("redis.conf");
            std::fs::write(&path, text).expect("write redis.conf");
            path
        });
        // The port is free when asked, but another process may take it before
        // redis binds it: try a few ports before calling it a failure.
        let mut r = RedisServer {
            child: None,
            port: 0,
            dir,
            conf,
            password: password.map(str::to_owned),
        };
        let mut last_log = String::new();
        for _ in 0..5 {
            r.port = free_port();
            match r.launch() {
                Ok(()) => return r,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start; last log:\n{last_log}");
    }

    /// `redis://127.0.0.1:PORT/0`, with `:PASSWORD@` when there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (the AOF lives in `appendonlydir/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Graceful `SHUTDOWN` (Redis flushes and fsyncs the AOF), then waits for
    /// the process to exit. The directory is kept for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A successful SHUTDOWN closes the connection without a reply.
        let _ = self.try_command(&["SHUTDOWN"]);
        if wait_exit(&mut child, PATIENCE).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server ignored SHUTDOWN:\n{}", self.log());
        }
    }

    /// `kill -9`: whatever `appendfsync everysec` had not written yet is lost,
    /// as in a real crash. The directory is kept.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and directory, so the AOF is reloaded.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        // After a stop the port can linger briefly in the kernel; retry for a while.
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(log) if Instant::now() >= deadline => {
                    panic!("redis-server did not start again:\n{log}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs one command and returns its reply as text (see [`Reply::text`]);
    /// panics when Redis is unreachable or answers an error.
    pub fn command(&self, args: &[&str]) -> String {
        match self.try_command(args) {
            Ok(Reply::Error(e)) => panic!("redis {args:?}: {e}"),
            Ok(r) => r.text(),
            Err(e) => panic!("redis {args:?}: {e}"),
        }
    }

    /// Runs one command on a fresh connection.
    pub fn try_command(&self, args: &[&str]) -> Result<Reply, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        if let Some(pw) = &self.password {
            stream
                .write_all(&encode(&["AUTH", pw]))
                .map_err(|e| e.to_string())?;
            match read_reply(&mut reader)? {
                Reply::Simple(ok) if ok == "OK" => {}
                other => return Err(format!("AUTH: {other:?}")),
            }
        }
        stream.write_all(&encode(args)).map_err(|e| e.to_string())?;
        read_reply(&mut reader)
    }

    /// Runs one command without AUTH (what a client with no password gets).
    pub fn try_unauthenticated(&self, args: &[&str]) -> Result<Reply, String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        (&stream)
            .write_all(&encode(args))
            .map_err(|e| e.to_string())?;
        read_reply(&mut reader)
    }

    /// Keys matching a glob pattern (`KEYS`; test instances are small).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        match self.try_command(&["KEYS", pattern]) {
            Ok(Reply::Array(Some(items))) => items.iter().map(Reply::text).collect(),
            other => panic!("KEYS {pattern}: {other:?}"),
        }
    }

    /// redis-server's own log (stdout, written to a file in its directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Spawns redis-server and waits for PING; `Err` carries its log.
    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("redis log file");
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        match &self.conf {
            // A config file must come first; command-line options override it.
            Some(conf) => cmd.arg(conf),
            None => cmd
                .args(["--appendonly", "yes", "--appendfsync", "everysec"])
                .args(["--save", ""]),
        };
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        let mut child = cmd
            .args(["--port", &port, "--bind", "127.0.0.1", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (scripts/test.sh installs it)");
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Err(self.log());
            }
            if matches!(self.try_command(&["PING"]), Ok(Reply::Simple(ref s)) if s == "PONG") {
                // Whoever answers must be ours, not another test's server that
                // happened to get the same port first.
                if self.serves_our_dir() {
                    self.child = Some(child);
                    return Ok(());
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("port {} belongs to another redis", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(self.log())
    }
}

impl RedisServer {
    fn serves_our_dir(&self) -> bool {
        let Ok(Reply::Array(Some(kv))) = self.try_command(&["CONFIG", "GET", "dir"]) else {
            return false;
        };
        let ours = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        kv.get(1)
            .map(|d| Path::new(&d.text()) == ours)
            .unwrap_or(false)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_exit(child: &mut Child, patience: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".to_owned());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let num = || {
        rest.parse::<i64>()
            .map_err(|e| format!("bad RESP {line:?}: {e}"))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Int(num()?)),
        "$" => {
            let len = num()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let len = num()?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(format!("bad RESP line {line:?}")),
    }
}

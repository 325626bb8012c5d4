//! Child processes of the load harness: the mock, the Sluice instances (configs in
//! `configs.rs`), nginx and redis-server; and the failing provider that runs inside the harness.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::configs::{ADMIN_TOKEN, ADMIN_TOKEN_ENV, UPSTREAM_KEY_ENV};
use crate::procfs::stat_fields;

/// Pids of everything we started, for the Ctrl-C path (which cannot run destructors).
pub(crate) static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn register_pid(pid: u32) {
    PIDS.lock().expect("pids").push(pid);
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; treat it as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_fields(&s).first().is_some_and(|st| *st != "Z"))
        .unwrap_or(false)
}

/// Owns the child processes and the temp dir; kills and removes them on drop, panics included.
pub(crate) struct Procs {
    pub(crate) children: Vec<(&'static str, Child)>,
    /// Processes we did not spawn ourselves but must not leave behind (nginx workers).
    pub(crate) extra_pids: Vec<u32>,
    pub(crate) dir: PathBuf,
}

impl Procs {
    /// No children yet; a fresh temp dir for configs, logs and journals.
    pub(crate) fn new() -> Procs {
        let dir = std::env::temp_dir().join(format!("sluice-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Procs {
            children: Vec::new(),
            extra_pids: Vec::new(),
            dir,
        }
    }

    pub(crate) fn add(&mut self, name: &'static str, child: Child) -> u32 {
        let pid = child.id();
        register_pid(pid);
        self.children.push((name, child));
        pid
    }

    /// Stops one child we started (TERM, then KILL after 3 s) and forgets it.
    pub(crate) fn stop(&mut self, pid: u32) {
        let Some(i) = self.children.iter().position(|(_, c)| c.id() == pid) else {
            return;
        };
        let (_, mut child) = self.children.remove(i);
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        PIDS.lock().expect("pids").retain(|p| *p != pid);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &self.children {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (_, c) in &mut self.children {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &self.extra_pids {
            if alive(*pid) {
                signal(*pid, "KILL");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps reading a child's output so it never blocks on a full pipe; lines containing `needle`
/// are also sent to `tx`, and the last lines are kept in `log`.
/// A needle no output line holds.
const NEVER: &str = "\u{0}";

/// Drains a child's stdout and stderr into one log tail; the receiver gets
/// the first stdout line holding `ready`.
fn capture(
    child: &mut Child,
    ready: &'static str,
) -> (Arc<Mutex<LogTail>>, mpsc::Receiver<String>) {
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        drain(out, ready, tx.clone(), log.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain(err, NEVER, tx, log.clone());
    }
    (log, rx)
}

pub(crate) fn drain(
    out: impl Read + Send + 'static,
    needle: &'static str,
    tx: mpsc::Sender<String>,
    log: Arc<Mutex<LogTail>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(line.clone());
            }
            log.lock().expect("log").push(line);
        }
    });
}

/// The first lines and a count of everything a child wrote.
#[derive(Default)]
pub(crate) struct LogTail {
    pub(crate) total: usize,
    pub(crate) first: Vec<String>,
}

impl LogTail {
    pub(crate) fn push(&mut self, line: String) {
        self.total += 1;
        if self.first.len() < 20 {
            self.first.push(line);
        }
    }
}

pub(crate) fn bin_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --release --bins` first (bench/run.sh does)",
        path.display()
    );
    path
}

pub(crate) fn wait_line(
    rx: &mpsc::Receiver<String>,
    what: &str,
    log: &Arc<Mutex<LogTail>>,
) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            panic!(
                "{what} did not start; output:\n{}",
                log.lock().expect("log").first.join("\n")
            )
        })
}

pub(crate) fn start_mock(procs: &mut Procs) -> (u32, SocketAddr, Arc<Mutex<LogTail>>) {
    let mut child = Command::new(bin_path("sluice-mock"))
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice-mock");
    let (log, rx) = capture(&mut child, "listening on");
    let pid = procs.add("sluice-mock", child);
    let line = wait_line(&rx, "sluice-mock", &log);
    let addr = line
        .rsplit("http://")
        .next()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected mock banner {line:?}"));
    (pid, addr, log)
}

/// Starts Sluice with `config`; returns its pid, data and admin addresses and its log.
pub(crate) fn start_sluice(
    procs: &mut Procs,
    file: &str,
    config: &str,
) -> (u32, SocketAddr, SocketAddr, Arc<Mutex<LogTail>>) {
    let path = procs.dir.join(file);
    std::fs::write(&path, config).expect("write sluice config");
    let mut child = Command::new(bin_path("sluice"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        .env(UPSTREAM_KEY_ENV, "sk-bench-upstream-0123456789")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr"),
        "sluice listening",
        tx,
        log.clone(),
    );
    let pid = procs.add("sluice", child);
    let line = wait_line(&rx, "sluice", &log);
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name} address in {line:?}"))
    };
    let (data, admin) = (field("data="), field("admin="));
    // Wait for the listener to actually accept (the line is logged right after bind).
    wait_connect(data, "sluice");
    (pid, data, admin, log)
}

pub(crate) fn wait_connect(addr: SocketAddr, what: &str) {
    for _ in 0..200 {
        if StdStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} never accepted connections on {addr}");
}

pub(crate) fn have_nginx() -> bool {
    Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts nginx as a plain `proxy_pass` to the mock; returns the pids to charge (master and
/// worker) and its address.
pub(crate) fn start_nginx(
    procs: &mut Procs,
    mock: SocketAddr,
) -> (Vec<u32>, SocketAddr, Arc<Mutex<LogTail>>) {
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = procs.dir.join("nginx");
    std::fs::create_dir_all(&dir).expect("nginx dir");
    let d = dir.display();
    // `user root` keeps the worker able to write its temp dirs when we run as root (nginx
    // ignores the directive, with a warning, otherwise).
    let config = format!(
        r#"# Generated by bench/load.rs
user root;
worker_processes 1;
daemon off;
error_log stderr warn;
pid {d}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    # Keep request bodies (up to the 400 KB prompts) in memory, as Sluice does.
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream mock {{
        server {mock};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx config");
    let mut child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nginx");
    let log = Arc::new(Mutex::new(LogTail::default()));
    let (tx, _rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("stderr"),
        "\u{0}",
        tx,
        log.clone(),
    );
    let master = procs.add("nginx", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_connect(addr, "nginx");
    let mut workers = Vec::new();
    for _ in 0..100 {
        workers = children_of(master);
        if !workers.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in &workers {
        register_pid(*w);
    }
    procs.extra_pids.extend(&workers);
    let mut pids = vec![master];
    pids.extend(workers);
    (pids, addr, log)
}

/// Starts a private redis-server on a free port for the fleet-mode configurations, persisting
/// as a production fleet would (AOF, fsync every second; no RDB snapshots) into the temp dir.
/// None, with a message, when `redis-server` is not installed.
pub(crate) fn start_redis(procs: &mut Procs) -> Option<(u32, SocketAddr, Arc<Mutex<LogTail>>)> {
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("load: redis-server not on PATH: the fleet-mode (redis) scenarios are skipped");
        return None;
    }
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = procs.dir.join("redis");
    std::fs::create_dir_all(&dir).expect("redis dir");
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-server");
    let (log, _rx) = capture(&mut child, NEVER);
    let pid = procs.add("redis-server", child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_connect(addr, "redis-server");
    Some((pid, addr, log))
}

pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|s| stat_fields(&s).get(1) == Some(&parent.to_string().as_str()))
        })
        .collect()
}

/// Connections accepted and requests answered by the failing provider.
pub(crate) static FAILING_CONNS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static FAILING_REQS: AtomicUsize = AtomicUsize::new(0);

/// A provider that answers every request with HTTP 500 and an OpenAI-shaped error body; runs
/// on the harness's runtime (its CPU counts as client CPU).
pub(crate) async fn start_failing() -> SocketAddr {
    const BODY: &[u8] = br#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind failing provider");
    let addr = listener.local_addr().expect("failing addr");
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            FAILING_CONNS.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        FAILING_REQS.fetch_add(1, Ordering::Relaxed);
                        let _ = req.into_body().collect().await;
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
                        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

//! The private redis-server fixture the fleet tests stand on: it starts, it
//! answers, and what it was told survives a graceful stop and a start on the
//! same directory (the AOF is reloaded), which the fleet tests rely on when
//! they stop Redis mid-run.

#[path = "support/redis.rs"]
mod redis;

use redis::{RedisServer, Reply};

#[test]
fn data_survives_stop_and_start_again() {
    let mut r = RedisServer::start();
    assert!(r.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(
        r.command(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nyes"
    );
    assert_eq!(
        r.command(&["CONFIG", "GET", "appendfsync"]),
        "appendfsync\neverysec"
    );
    assert_eq!(r.command(&["SET", "sluice:test", "42"]), "OK");
    assert_eq!(r.command(&["INCRBY", "sluice:counter", "7"]), "7");

    let port = r.port();
    r.stop();
    assert!(!r.is_running());
    assert!(
        r.try_command(&["PING"]).is_err(),
        "stopped means unreachable"
    );

    r.start_again();
    assert_eq!(r.port(), port, "same port, so a client's URL stays valid");
    assert_eq!(r.command(&["GET", "sluice:test"]), "42");
    assert_eq!(r.command(&["GET", "sluice:counter"]), "7");
    assert_eq!(r.keys("sluice:*").len(), 2);
    assert!(matches!(
        r.try_command(&["NOSUCHCOMMAND"]),
        Ok(Reply::Error(_))
    ));
}

#[test]
fn kill9_then_start_again_keeps_what_was_fsynced() {
    let mut r = RedisServer::start();
    assert_eq!(r.command(&["SET", "k", "v"]), "OK");
    // kill -9 loses only what redis had not yet write()n to the AOF (the page
    // cache survives a process crash; `everysec` matters for a machine crash),
    // and redis may hold a write back while an fsync is running: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let aof = r.dir().join("appendonlydir");
    loop {
        let written = std::fs::read_dir(&aof)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().contains(".incr."))
                    .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
            })
            .unwrap_or(false);
        if written {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "AOF never written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    r.kill9();
    assert!(!r.is_running());
    r.start_again();
    assert_eq!(r.command(&["GET", "k"]), "v");
}

#[test]
fn a_password_protected_server_refuses_strangers() {
    let r = RedisServer::start_with_password("s3cret-pass");
    assert_eq!(r.url().split('@').next(), Some("redis://:s3cret-pass"));
    assert_eq!(r.command(&["SET", "k", "v"]), "OK", "the fixture AUTHs");
    let stranger = r.try_unauthenticated(&["GET", "k"]);
    assert!(
        matches!(stranger, Ok(Reply::Error(ref e)) if e.starts_with("NOAUTH")),
        "{stranger:?}"
    );
}

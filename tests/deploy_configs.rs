//! The configs shipped in deploy/ are real: every `proxy.toml` embedded in a
//! manifest passes `sluice check` (with the environment the manifest gives the
//! container), and the Redis config in deploy/k8s/redis.yaml starts a real
//! redis-server with the persistence and eviction settings the docs promise.

#[path = "support/redis.rs"]
mod redis;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use redis::RedisServer;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read deploy dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path, exts));
        } else if exts
            .iter()
            .any(|e| path.to_string_lossy().ends_with(&format!(".{e}")))
        {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The contents of every YAML block scalar `key: |` in `yaml`, with the
/// block's indentation removed. (A hand-rolled reader: the manifests use
/// nothing fancier, and the test needs no YAML crate.)
fn block_scalars(yaml: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let key_indent = line.len() - line.trim_start().len();
        i += 1;
        if line.trim() != format!("{key}: |") {
            continue;
        }
        let mut block = Vec::new();
        let mut indent = None;
        while i < lines.len() {
            let l = lines[i];
            let l_indent = l.len() - l.trim_start().len();
            if !l.trim().is_empty() && l_indent <= key_indent {
                break;
            }
            let ind = *indent.get_or_insert(l_indent);
            block.push(l.get(ind..).unwrap_or("").to_owned());
            i += 1;
        }
        out.push(block.join("\n") + "\n");
    }
    out
}

/// The value of `name:` in a `stringData` map, unquoted.
fn string_data(yaml: &str, name: &str) -> Option<String> {
    yaml.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(&format!("{name}:"))?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["check", "--config"]).arg(config);
    cmd.env_remove("SLUICE_REDIS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice check")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-deploy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn every_embedded_proxy_toml_passes_sluice_check() {
    let redis_yaml =
        std::fs::read_to_string(deploy_dir().join("k8s/redis.yaml")).expect("redis.yaml");
    // The sidecars get SLUICE_REDIS_URL from redis.yaml's Secret: check with that.
    let redis_url = string_data(&redis_yaml, "SLUICE_REDIS_URL").expect("Secret's URL");
    let env = [("SLUICE_REDIS_URL", redis_url.as_str())];

    let dir = scratch("check");
    let mut checked = Vec::new();
    for file in files(&deploy_dir(), &["yaml", "yml", "toml"]) {
        let text = std::fs::read_to_string(&file).expect("read");
        let configs = if file.extension().is_some_and(|e| e == "toml") {
            vec![text]
        } else {
            block_scalars(&text, "proxy.toml")
        };
        for (n, config) in configs.iter().enumerate() {
            let name = file.file_name().expect("name").to_string_lossy();
            let path = dir.join(format!("{name}.{n}.proxy.toml"));
            std::fs::write(&path, config).expect("write");
            let out = check(&path, &env);
            assert!(
                out.status.success(),
                "{} (proxy.toml #{n}) fails `sluice check`:\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked.push((file.clone(), config.clone(), path));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        checked
            .iter()
            .any(|(f, _, _)| f.ends_with("k8s/agent-with-sluice.yaml")),
        "the sidecar's ConfigMap was found: {checked:?}"
    );
}

#[test]
fn the_sidecar_keeps_its_state_in_redis_and_its_secret_out_of_the_configmap() {
    let yaml = std::fs::read_to_string(deploy_dir().join("k8s/agent-with-sluice.yaml"))
        .expect("agent-with-sluice.yaml");
    let configs = block_scalars(&yaml, "proxy.toml");
    assert_eq!(configs.len(), 1);
    let config: toml::Value = toml::from_str(&configs[0]).expect("TOML");
    let state = &config["state"];
    assert_eq!(state["backend"].as_str(), Some("redis"));
    assert_eq!(state["url_env"].as_str(), Some("SLUICE_REDIS_URL"));
    assert!(
        state.get("url").is_none(),
        "the password stays in the Secret"
    );
    assert!(
        yaml.contains("secretKeyRef: { name: sluice-redis, key: SLUICE_REDIS_URL }"),
        "the sidecar's env reads the URL from redis.yaml's Secret"
    );
    assert!(
        !yaml.contains("name: sluice-state"),
        "no budget state volume in the pod"
    );

    // Without the Secret's variable the config is refused, naming it.
    let dir = scratch("noenv");
    let path = dir.join("proxy.toml");
    std::fs::write(&path, &configs[0]).expect("write");
    let out = check(&path, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLUICE_REDIS_URL"), "{err}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let k8s = deploy_dir().join("k8s");
    let kustomization =
        std::fs::read_to_string(k8s.join("kustomization.yaml")).expect("kustomization.yaml");
    for file in files(&k8s, &["yaml"]) {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name != "kustomization.yaml" {
            assert!(
                kustomization.contains(&format!("  - {name}\n")),
                "{name} is missing from deploy/k8s/kustomization.yaml"
            );
        }
    }
}

#[test]
fn the_shipped_redis_conf_runs_with_aof_and_never_evicts() {
    let yaml = std::fs::read_to_string(deploy_dir().join("k8s/redis.yaml")).expect("redis.yaml");
    let confs = block_scalars(&yaml, "redis.conf");
    assert_eq!(confs.len(), 1);
    // The file keeps its data on the PersistentVolume's mount.
    assert!(confs[0].contains("\ndir /data\n"), "{}", confs[0]);
    // Redis enters `dir` while it reads the file, and /data does not exist
    // here; the fixture then overrides only port, bind and dir, so everything
    // else that runs is the shipped file's.
    let conf = confs[0].replace("\ndir /data\n", "\ndir .\n");
    let r = RedisServer::start_with_config(&conf);
    let get = |k: &str| r.command(&["CONFIG", "GET", k]);
    assert_eq!(get("appendonly"), "appendonly\nyes");
    assert_eq!(get("appendfsync"), "appendfsync\neverysec");
    assert_eq!(get("save"), "save\n");
    assert_eq!(
        get("maxmemory-policy"),
        "maxmemory-policy\nnoeviction",
        "an evicted budget key would be a fresh allowance"
    );
    assert_eq!(
        get("maxmemory"),
        format!("maxmemory\n{}", 192 * 1024 * 1024)
    );
    assert_eq!(r.command(&["SET", "sluice:probe", "1"]), "OK");
}

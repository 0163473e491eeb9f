//! The process-manager files in `process/`: the systemd units pass
//! `systemd-analyze verify` and keep their hardening, the template differs
//! from the plain unit only where it names the instance, the pm2 ecosystem
//! runs two instances on the nginx upstream ports, and every environment
//! variable these files set or document is a config key the binary accepts.
//!
//! `systemd-analyze` (Debian package `systemd`) missing: the tests that need it
//! print a note and pass, unless `CI` is set; then they fail, so a skip cannot
//! hide a broken unit in CI (tests/run.sh installs the package).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_weapp-gateway");
/// The binary path the shipped files start.
const SHIPPED_BIN: &str = "/usr/local/bin/weapp-gateway";
/// The config path the shipped files pass to `serve --config`.
const SHIPPED_CONFIG: &str = "/etc/weapp-gateway/config.toml";
/// The instance ports of the shipped pm2 file and nginx upstream block.
const PORTS: [u16; 2] = [5757, 5758];

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Whether skips must fail: `CI` or `WEAPP_TEST_STRICT` (set by tests/run.sh) set to anything but "", "0" or "false".
fn in_ci() -> bool {
    ["CI", "WEAPP_TEST_STRICT"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")))
}

/// `systemd-analyze`, or `None` after printing why the test is skipped;
/// panics instead when [`in_ci`].
fn systemd_analyze_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{test}: systemd-analyze is not installed, and CI is set: install the Debian \
             package `systemd` (tests/run.sh does) instead of skipping"
        );
        eprintln!("{test}: SKIPPED: systemd-analyze not found (Debian package `systemd`)");
    }
    found
}

/// A unit's `Key=value` settings, in order, per key (repeated keys keep
/// every value). Comments and section headers are skipped.
fn settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let (key, value) =
            line.split_once('=').unwrap_or_else(|| panic!("not a Key=value line: {line:?}"));
        map.entry(key.trim().to_owned()).or_default().push(value.trim().to_owned());
    }
    map
}

/// The single value of `key`; panics when it is missing or repeated.
fn one<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{key}: expected exactly one setting, found {other:?}"),
    }
}

/// A systemd time span like "20s", "2min" or "1500ms".
fn timespan(text: &str) -> Duration {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().unwrap_or_else(|_| panic!("not a time span: {text:?}"));
    match unit.trim() {
        "" | "s" | "sec" => Duration::from_secs(n),
        "ms" | "msec" => Duration::from_millis(n),
        "min" | "m" => Duration::from_secs(n * 60),
        other => panic!("unit {other:?} of {text:?} not understood by this test"),
    }
}

/// Both shipped units: (file name, text).
fn units() -> [(&'static str, String); 2] {
    [
        ("weapp-gateway.service", repo_file("process/weapp-gateway.service")),
        ("weapp-gateway@.service", repo_file("process/weapp-gateway@.service")),
    ]
}

#[test]
fn both_units_keep_their_hardening() {
    // server.shutdown_grace of the production example: the stop timeout must
    // leave the gateway time to drain.
    let production = repo_file("config/production.example.toml");
    let grace = production
        .lines()
        .find_map(|l| l.trim().strip_prefix("shutdown_grace = "))
        .map(|v| timespan(v.trim_matches('"')))
        .expect("shutdown_grace in config/production.example.toml");

    for (name, text) in units() {
        let s = settings(&text);
        let expect = |key: &str, value: &str| {
            assert_eq!(one(&s, key), value, "{name}: {key}");
        };
        expect("Type", "exec");
        expect("ExecStart", &format!("{SHIPPED_BIN} serve --config {SHIPPED_CONFIG}"));
        expect("ExecReload", "/bin/kill -HUP $MAINPID");
        expect("Restart", "on-failure");
        assert!(timespan(one(&s, "RestartSec")) >= Duration::from_secs(1), "{name}: RestartSec");
        assert_eq!(
            s["EnvironmentFile"][0], "-/etc/weapp-gateway/weapp-gateway.env",
            "{name}: the secrets file comes first"
        );
        // The sandbox.
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
            ("RestrictNamespaces", "yes"),
            ("LockPersonality", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("SystemCallArchitectures", "native"),
            ("KillSignal", "SIGTERM"),
            ("LimitNOFILE", "65536"),
            // Empty: no capabilities at all (the gateway binds ports >= 1024).
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
        ] {
            expect(key, value);
        }
        assert!(!s.contains_key("User") && !s.contains_key("Group"), "{name}: DynamicUser only");
        let stop = timespan(one(&s, "TimeoutStopSec"));
        assert!(stop > grace, "{name}: TimeoutStopSec {stop:?} <= shutdown_grace {grace:?}");
        let capability =
            text.lines().find(|l| !l.trim_start().starts_with('#') && l.contains("CAP_"));
        assert_eq!(capability, None, "{name}: grants a capability");
    }
}

#[test]
fn the_template_differs_from_the_unit_only_where_it_names_the_instance() {
    let [(_, unit), (_, template)] = units();
    let template_settings = settings(&template);
    assert_eq!(
        template_settings["Environment"],
        ["RUST_LOG=info", "WEAPP__SERVER__LISTEN=127.0.0.1:%i"],
        "the instance listens on its port"
    );
    assert_eq!(
        template_settings["EnvironmentFile"],
        ["-/etc/weapp-gateway/weapp-gateway.env", "-/etc/weapp-gateway/weapp-gateway@%i.env"]
    );

    // Drop the lines that name the instance; the rest must be the same, so the
    // two units cannot drift apart.
    let strip = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| !l.starts_with("Description=") && !l.contains("%i"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(strip(&template), strip(&unit));
}

/// Write the units into `dir` with ExecStart pointed at a dummy executable
/// there (`systemd-analyze verify` insists the binary exists and is
/// executable), the template under an instance name so %i resolves.
/// Returns the unit paths.
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let bin = dir.join("bin/weapp-gateway");
    std::fs::create_dir_all(dir.join("bin")).expect("bin dir");
    std::fs::write(&bin, "#!/bin/sh\nexit 0\n").expect("dummy binary");
    let chmod = Command::new("chmod").arg("755").arg(&bin).status().expect("chmod");
    assert!(chmod.success());
    units()
        .into_iter()
        .map(|(name, text)| {
            let exec = format!("ExecStart={SHIPPED_BIN} ");
            assert!(text.contains(&exec), "{name}: no {exec:?}");
            let text = text.replace(&exec, &format!("ExecStart={} ", bin.display()));
            let path = dir.join(name.replace("@.", &format!("@{}.", PORTS[0])));
            std::fs::write(&path, text).expect("write unit");
            path
        })
        .collect()
}

/// Problems `systemd-analyze verify` reports for `unit`: a failed exit, or
/// any output line about this unit (unknown keys and bad values are only
/// warnings, with exit status 0).
fn verify(tool: &Path, unit: &Path) -> Vec<String> {
    let out = Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze verify");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let name = unit.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let dir = unit.parent().map(|d| d.display().to_string()).unwrap_or_default();
    let (mut problems, notes): (Vec<String>, Vec<String>) = text
        .lines()
        .map(str::to_owned)
        .partition(|l| l.contains(name) || l.contains(&dir) || l.contains("weapp-gateway"));
    for note in notes {
        // About some other unit (e.g. a dependency on this host): not ours to fix.
        eprintln!("note: systemd-analyze verify {name}: {note}");
    }
    if !out.status.success() {
        problems.push(format!("exit status {}: {text}", out.status));
    }
    problems
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(tool) = systemd_analyze_or_skip("the_units_pass_systemd_analyze_verify") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = units_for_verify(dir.path());
    for path in &paths {
        let problems = verify(&tool, path);
        assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));
    }

    // The check above catches what verify only warns about: a typo'd key
    // and a bad value in a copy of the unit are reported.
    let broken = dir.path().join("weapp-gateway-broken.service");
    let text = std::fs::read_to_string(&paths[0]).expect("unit");
    std::fs::write(
        &broken,
        text.replace("ProtectSystem=strict", "ProtectSystem=strct\nProtectSytem=strict"),
    )
    .expect("write broken unit");
    let problems = verify(&tool, &broken);
    assert!(problems.iter().any(|p| p.contains("ProtectSytem")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("strct")), "{problems:?}");
}

#[test]
fn the_units_sandbox_rates_ok_in_systemd_analyze_security() {
    let Some(tool) = systemd_analyze_or_skip("the_units_sandbox_rates_ok") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for path in units_for_verify(dir.path()) {
        let out = Command::new(&tool)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .expect("run systemd-analyze security");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("--offline") && !out.status.success() {
            // systemd < 250 has no offline mode: nothing to rate the file with.
            // Debian 12's 252 has it, so under the README test command a skip
            // here means something is wrong.
            assert!(!in_ci(), "systemd-analyze security --offline unsupported under CI:\n{text}");
            eprintln!("SKIPPED: systemd-analyze security --offline not supported:\n{text}");
            return;
        }
        assert!(out.status.success(), "{}: {text}", path.display());
        // "→ Overall exposure level for weapp-gateway.service: 1.4 OK 🙂"
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for ").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_once(": ").map(|(_, r)| r))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
        // 0 = locked down, 10 = unprotected; a plain unit rates 9.6 UNSAFE.
        assert!(score <= 2.0, "{}: exposure {score}:\n{text}", path.display());
    }
}

#[test]
fn the_pm2_ecosystem_runs_two_instances_on_the_nginx_upstream_ports() {
    let ecosystem: Value =
        serde_json::from_str(&repo_file("process/process.json")).expect("process.json is JSON");
    let apps = ecosystem["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 2);
    let nginx = repo_file("nginx/weapp-gateway.conf");
    let mut names = Vec::new();
    for (app, port) in apps.iter().zip(PORTS) {
        let name = app["name"].as_str().expect("name");
        names.push(name);
        assert_eq!(app["script"], SHIPPED_BIN, "{name}");
        // Not a Node script: pm2 must exec the binary itself, in fork mode.
        assert_eq!(app["interpreter"], "none", "{name}");
        assert_eq!(app["exec_mode"], "fork", "{name}");
        assert_eq!(app["instances"], 1, "{name}");
        assert_eq!(app["autorestart"], true, "{name}");
        assert_eq!(app["args"], serde_json::json!(["serve", "--config", SHIPPED_CONFIG]), "{name}");
        // pm2 sends SIGINT, waits kill_timeout ms, then SIGKILL: leave the
        // gateway its shutdown grace (10s).
        let kill_timeout = app["kill_timeout"].as_u64().expect("kill_timeout");
        assert!(kill_timeout > 10_000, "{name}: kill_timeout {kill_timeout}");
        let listen = format!("127.0.0.1:{port}");
        assert_eq!(app["env"]["WEAPP__SERVER__LISTEN"], listen.as_str(), "{name}");
        assert!(nginx.contains(&format!("server {listen} ")), "nginx upstream lacks {listen}");
    }
    assert_ne!(names[0], names[1]);
}

/// Run `weapp-gateway check-config` on the production example with `env`
/// (and nothing else from this process's WEAPP__ environment).
fn check_config(env: &[(String, String)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WEAPP") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["check-config", "--config", "config/production.example.toml"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = cmd.output().expect("run weapp-gateway check-config");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn every_variable_the_process_files_set_is_a_config_key_the_binary_accepts() {
    // The env example: KEY=value lines (no "export"), the AppSecret set, and
    // every WEAPP__ variable, commented out or not, accepted by the binary.
    let example = repo_file("process/weapp-gateway.env.example");
    let mut env = Vec::new();
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let setting = line.strip_prefix('#').unwrap_or(line);
        let Some((key, value)) = setting.split_once('=') else { continue };
        if !key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            continue; // prose
        }
        assert!(!line.starts_with("export"), "{line}");
        // TLS paths must name real files; native TLS has its own tests.
        if key.starts_with("WEAPP__") && !key.starts_with("WEAPP__SERVER__TLS__") {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    // Token placeholders are refused as they stand (an operator who only
    // uncomments them must not run with a publicly known token) ...
    let placeholders: Vec<String> =
        env.iter().filter(|(_, v)| v == "CHANGE-ME").map(|(k, _)| k.clone()).collect();
    assert!(!placeholders.is_empty(), "the example no longer has token placeholders");
    for key in &placeholders {
        let only: Vec<(String, String)> =
            env.iter().filter(|(k, v)| k == key || v != "CHANGE-ME").cloned().collect();
        let (ok, text) = check_config(&only);
        let name = key.trim_start_matches("WEAPP__").replace("__", ".").to_ascii_lowercase();
        assert!(!ok && text.contains(&name), "{key}=CHANGE-ME was accepted:\n{text}");
    }
    // ... and accepted once replaced by a real random token.
    for (_, value) in env.iter_mut().filter(|(_, v)| v == "CHANGE-ME") {
        *value = "3f9a1c0e7b2d4865a0c1e9f7d3b5a2c4".to_owned();
    }
    let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for secret in ["WEAPP__WECHAT__APP_SECRET", "WEAPP__REDIS__URL", "WEAPP__MONGODB__URI"] {
        assert!(keys.contains(&secret), "weapp-gateway.env.example does not document {secret}");
    }
    assert!(
        !keys.contains(&"WEAPP__SERVER__LISTEN"),
        "the env file would override every instance's port"
    );
    assert!(
        example.lines().any(|l| l.starts_with("WEAPP__WECHAT__APP_SECRET=")),
        "the AppSecret line is not active"
    );
    let (ok, text) = check_config(&env);
    assert!(ok, "check-config refused the variables of weapp-gateway.env.example:\n{text}");
    assert!(text.contains("config OK"), "{text}");
    assert!(!text.contains("replace-with-the-appsecret"), "the secret was printed:\n{text}");

    // The template instance's and each pm2 app's environment.
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "pm2-secret\n").expect("write secret");
    let ecosystem: Value = serde_json::from_str(&repo_file("process/process.json")).expect("JSON");
    for app in ecosystem["apps"].as_array().expect("apps") {
        let mut env: Vec<(String, String)> = app["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
            .collect();
        for (k, v) in &mut env {
            if k == "WEAPP__WECHAT__APP_SECRET_FILE" {
                *v = secret.path().display().to_string();
            }
        }
        let listen = app["env"]["WEAPP__SERVER__LISTEN"].as_str().expect("listen");
        let (ok, text) = check_config(&env);
        assert!(ok, "{}: check-config refused its env:\n{text}", app["name"]);
        assert!(text.contains(&format!("listen: {listen}")), "{text}");
    }
    let template = settings(&repo_file("process/weapp-gateway@.service"));
    let instance_env: Vec<(String, String)> = template["Environment"]
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("WEAPP__"))
        .map(|(k, v)| (k.to_owned(), v.replace("%i", &PORTS[1].to_string())))
        .chain([("WEAPP__WECHAT__APP_SECRET".to_owned(), "x".to_owned())])
        .collect();
    let (ok, text) = check_config(&instance_env);
    assert!(ok, "check-config refused weapp-gateway@{}'s env:\n{text}", PORTS[1]);
    assert!(text.contains(&format!("listen: 127.0.0.1:{}", PORTS[1])), "{text}");
}

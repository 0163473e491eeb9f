//! A real nginx (the Debian package's `/usr/sbin/nginx`) running the shipped
//! `nginx/weapp-gateway.conf` on free loopback ports.
//!
//! The site config under test is generated FROM the shipped file: the values
//! its `EDIT` comments mark (listen ports, server_name, certificate paths,
//! upstream addresses, log paths) are replaced by exact text, and a
//! replacement that finds nothing fails the test, so the test can never
//! silently run something other than what users copy. A small main
//! `nginx.conf` (pid, error log, temp paths, all in a scratch directory)
//! includes it in its `http {}` block, as Debian's `/etc/nginx/nginx.conf`
//! includes `conf.d/*.conf`.
//!
//! nginx runs in the foreground (`-g 'daemon off;'`) under
//! [`crate::process::spawn_guarded`], so it never outlives the test process;
//! the supervisor also deletes the scratch directory.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::process::{Guarded, spawn_guarded};
use crate::redis::free_port;

/// How long nginx may take to accept its first TLS handshake.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped nginx may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The name the test certificate is issued for (and nginx's server_name).
pub const SERVER_NAME: &str = "localhost";

/// The shipped site config, the file users copy to /etc/nginx/conf.d/.
pub fn shipped_config_path() -> PathBuf {
    crate::repo_root().join("nginx/weapp-gateway.conf")
}

/// The shipped site config's text.
pub fn shipped_config() -> String {
    let path = shipped_config_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether a missing tool must fail the test instead of skipping it: in CI
/// (`CI`) and under the README test command (`WEAPP_TEST_STRICT`, which
/// tests/run.sh exports after installing everything), either set to anything
/// but "", "0" or "false".
pub fn in_ci() -> bool {
    ["CI", "WEAPP_TEST_STRICT"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")))
}

/// The nginx binary: `$NGINX`, else `/usr/sbin/nginx`, else `nginx` on PATH.
/// `None` (after printing why the test is skipped) when there is none;
/// panics instead when [`in_ci`], so a skip cannot hide a broken config.
pub fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    let candidates = std::env::var_os("NGINX")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    assert!(
        !in_ci(),
        "{test}: nginx is not installed, and CI or WEAPP_TEST_STRICT is set: install the \
         Debian package `nginx` (tests/run.sh does) instead of skipping"
    );
    eprintln!(
        "{test}: SKIPPED: nginx not found (install the Debian package `nginx`, or set NGINX)"
    );
    None
}

/// A test CA and a certificate for `localhost` / 127.0.0.1 it issued.
pub struct TestCert {
    /// The CA certificate (PEM), for a client's trust store.
    pub ca_pem: String,
    /// The CA certificate (DER).
    pub ca_der: CertificateDer<'static>,
    /// Leaf then CA (PEM), as nginx's `ssl_certificate` expects a fullchain.
    pub chain_pem: String,
    /// The leaf's private key (PEM).
    pub key_pem: String,
}

/// Make a fresh CA and a `localhost` certificate signed by it.
pub fn test_cert() -> TestCert {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "weapp-gateway test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("self-sign the CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
    leaf_params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("sign the leaf");
    TestCert {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// The values that replace the shipped config's EDIT values.
pub struct Substitutions {
    /// Replaces `listen 80;` (the `[::]:80` line is dropped).
    pub http_listen: String,
    /// Replaces `listen 443 ssl http2;` (the `[::]:443` line is dropped).
    pub https_listen: String,
    /// Replaces `weapp.example.com` in `server_name`.
    pub server_name: String,
    /// Replace the two upstream instances 127.0.0.1:5757 and 127.0.0.1:5758.
    pub upstreams: [String; 2],
    /// Replaces the certbot fullchain path.
    pub cert: PathBuf,
    /// Replaces the certbot key path.
    pub key: PathBuf,
    /// Replaces /var/log/nginx/weapp-gateway.access.log.
    pub access_log: PathBuf,
    /// Replaces /var/log/nginx/weapp-gateway.error.log.
    pub error_log: PathBuf,
}

/// Replace every `from` in `text` with `to`; panics when there is none (the
/// shipped config changed shape: update this file with it).
pub fn replace_all(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "nginx/weapp-gateway.conf no longer contains {from:?}: update crates/test-support/src/nginx.rs"
    );
    text.replace(from, to)
}

/// The shipped site config with only the certificate and log paths replaced
/// (what `nginx -t` needs to run without root-owned files); ports, upstreams
/// and server_name stay as shipped.
pub fn with_test_files(shipped: &str, s: &Substitutions) -> String {
    let mut text = replace_all(
        shipped,
        "/etc/letsencrypt/live/weapp.example.com/fullchain.pem",
        &s.cert.display().to_string(),
    );
    text = replace_all(
        &text,
        "/etc/letsencrypt/live/weapp.example.com/privkey.pem",
        &s.key.display().to_string(),
    );
    text = replace_all(
        &text,
        "/var/log/nginx/weapp-gateway.access.log",
        &s.access_log.display().to_string(),
    );
    replace_all(&text, "/var/log/nginx/weapp-gateway.error.log", &s.error_log.display().to_string())
}

/// The shipped site config with every EDIT value replaced.
pub fn render_site(shipped: &str, s: &Substitutions) -> String {
    let mut text = with_test_files(shipped, s);
    text = replace_all(&text, "listen [::]:80;", "");
    text = replace_all(&text, "listen [::]:443 ssl http2;", "");
    text = replace_all(&text, "listen 80;", &format!("listen {};", s.http_listen));
    text = replace_all(
        &text,
        "listen 443 ssl http2;",
        &format!("listen {} ssl http2;", s.https_listen),
    );
    text = replace_all(
        &text,
        "server_name weapp.example.com;",
        &format!("server_name {};", s.server_name),
    );
    text = replace_all(&text, "server 127.0.0.1:5757 ", &format!("server {} ", s.upstreams[0]));
    text = replace_all(&text, "server 127.0.0.1:5758 ", &format!("server {} ", s.upstreams[1]));
    assert!(
        !text.contains("weapp.example.com") && !text.contains("/etc/letsencrypt"),
        "an EDIT value of nginx/weapp-gateway.conf was not substituted:\n{text}"
    );
    text
}

/// Whether this process runs as root (nginx then needs `user root;` so its
/// workers can use the scratch directory).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    .map(|e| e == "0")
            })
        })
        .unwrap_or(false)
}

/// A scratch nginx prefix: main `nginx.conf`, the generated site, the test
/// certificate, logs and temp paths, all under one directory.
pub struct Prefix {
    /// The directory (`nginx -p`).
    pub dir: PathBuf,
    /// The main config (`nginx -c`).
    pub conf: PathBuf,
    /// The generated site config (included by `conf`).
    pub site: PathBuf,
    /// The site's access log.
    pub access_log: PathBuf,
    /// The site's error log.
    pub error_log: PathBuf,
    /// nginx's own error log (`nginx -e`, and the main config's error_log).
    pub main_error_log: PathBuf,
}

impl Prefix {
    /// Lay out `dir` and write the certificate, `site_text(substitutions)` and
    /// the main config into it.
    pub fn write(
        dir: &Path,
        cert: &TestCert,
        http_port: u16,
        https_port: u16,
        upstreams: [SocketAddr; 2],
        site_text: impl FnOnce(&Substitutions) -> String,
    ) -> Prefix {
        for sub in ["conf.d", "certs", "logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the nginx prefix");
        }
        let subs = Substitutions {
            http_listen: format!("127.0.0.1:{http_port}"),
            https_listen: format!("127.0.0.1:{https_port}"),
            server_name: SERVER_NAME.to_owned(),
            upstreams: upstreams.map(|a| a.to_string()),
            cert: dir.join("certs/fullchain.pem"),
            key: dir.join("certs/privkey.pem"),
            access_log: dir.join("logs/weapp-gateway.access.log"),
            error_log: dir.join("logs/weapp-gateway.error.log"),
        };
        std::fs::write(&subs.cert, &cert.chain_pem).expect("write the certificate");
        std::fs::write(&subs.key, &cert.key_pem).expect("write the key");
        let site = dir.join("conf.d/weapp-gateway.conf");
        std::fs::write(&site, site_text(&subs)).expect("write the site config");

        let main_error_log = dir.join("logs/error.log");
        let tmp = dir.join("tmp");
        // Like Debian's /etc/nginx/nginx.conf: mime.types and a permissive
        // http-level ssl_protocols, which the site must override. This does
        // not mask the shipped server-level setting: the site's 443 server
        // is the only (so the default) server on its port, whose
        // ssl_protocols nginx applies; the handshake test in
        // tests/nginx_e2e.rs shows TLS 1.1 is refused with this http level.
        let mime = Path::new("/etc/nginx/mime.types");
        let mut lines = Vec::new();
        if running_as_root() {
            lines.push("user root;".to_owned());
        }
        lines.extend([
            "worker_processes 1;".to_owned(),
            format!("pid {};", dir.join("nginx.pid").display()),
            format!("error_log {} notice;", main_error_log.display()),
            "events { worker_connections 256; }".to_owned(),
            "http {".to_owned(),
        ]);
        if mime.is_file() {
            lines.push(format!("    include {};", mime.display()));
        }
        lines.extend([
            "    default_type application/octet-stream;".to_owned(),
            "    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;".to_owned(),
            "    ssl_prefer_server_ciphers on;".to_owned(),
            format!("    access_log {};", dir.join("logs/default.access.log").display()),
        ]);
        for (directive, sub) in [
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ] {
            lines.push(format!("    {directive} {};", tmp.join(sub).display()));
        }
        lines.push(format!("    include {};", site.display()));
        lines.push("}\n".to_owned());
        let conf = dir.join("nginx.conf");
        let main = lines.join("\n");
        std::fs::write(&conf, main).expect("write nginx.conf");
        Prefix {
            dir: dir.to_owned(),
            conf,
            site,
            access_log: subs.access_log,
            error_log: subs.error_log,
            main_error_log,
        }
    }

    /// The arguments that point nginx at this prefix.
    pub fn args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.conf.display().to_string(),
            "-e".into(),
            self.main_error_log.display().to_string(),
        ]
    }

    /// Run `nginx -t` on this prefix.
    pub fn test_config(&self, nginx: &Path) -> Output {
        Command::new(nginx).arg("-t").args(self.args()).output().expect("run nginx -t")
    }
}

/// A running nginx in front of two gateway instances; stopped on drop.
pub struct Nginx {
    process: Option<Guarded>,
    prefix: Prefix,
    /// The plain-HTTP port (the redirect server).
    pub http_port: u16,
    /// The HTTPS port.
    pub https_port: u16,
    /// The certificate nginx serves.
    pub cert: TestCert,
}

impl Nginx {
    /// Start nginx with the shipped config in front of `upstreams`, and wait
    /// until it completes a TLS handshake.
    pub fn start(nginx: &Path, upstreams: [SocketAddr; 2]) -> Nginx {
        Self::start_with(nginx, upstreams, |site| site)
    }

    /// [`Nginx::start`], with `edit` applied to the rendered site config
    /// (e.g. a shorter timeout; use [`replace_all`] so an edit that finds
    /// nothing fails).
    pub fn start_with(
        nginx: &Path,
        upstreams: [SocketAddr; 2],
        edit: impl Fn(String) -> String,
    ) -> Nginx {
        let cert = test_cert();
        let shipped = shipped_config();
        let mut last_error = String::new();
        // A port picked by binding port 0 can be taken before nginx binds it.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("nginx-test.")
                .tempdir()
                .expect("scratch dir")
                .keep();
            let http_port = free_port();
            let https_port = std::iter::repeat_with(free_port)
                .take(10)
                .find(|&p| p != http_port)
                .expect("two distinct free ports");
            let prefix = Prefix::write(&dir, &cert, http_port, https_port, upstreams, |s| {
                edit(render_site(&shipped, s))
            });
            let mut args = vec!["-g".to_owned(), "daemon off;".to_owned()];
            args.extend(prefix.args());
            let stdout = dir.join("logs/stdout.log");
            let process = match spawn_guarded(nginx, &args, &stdout, Some(&dir)) {
                Ok(p) => p,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    last_error = e;
                    continue;
                }
            };
            match wait_for_tls(&process, https_port, &cert.ca_der) {
                Ok(()) => {
                    return Nginx { process: Some(process), prefix, http_port, https_port, cert };
                }
                Err(e) => {
                    // Read the logs before stopping: the supervisor removes them.
                    let logs = format!(
                        "{e}\n--- error.log\n{}\n--- stdout\n{}",
                        read_or_empty(&prefix.main_error_log),
                        read_or_empty(&stdout)
                    );
                    process.stop(STOP_TIMEOUT, false);
                    last_error = logs;
                }
            }
        }
        panic!("could not start nginx: {last_error}");
    }

    /// `https://localhost:{https_port}{path}`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{SERVER_NAME}:{}{path}", self.https_port)
    }

    /// `http://127.0.0.1:{http_port}{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// An HTTPS client that trusts only the test CA, resolves `localhost` to
    /// 127.0.0.1 and does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(self.cert.ca_pem.as_bytes()).expect("CA PEM");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(SERVER_NAME, SocketAddr::from((Ipv4Addr::LOCALHOST, self.https_port)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("HTTPS client")
    }

    /// The site's access log so far.
    pub fn access_log(&self) -> String {
        read_or_empty(&self.prefix.access_log)
    }

    /// The site's and nginx's error logs so far.
    pub fn error_logs(&self) -> String {
        format!(
            "{}{}",
            read_or_empty(&self.prefix.error_log),
            read_or_empty(&self.prefix.main_error_log)
        )
    }

    /// The generated site config nginx runs.
    pub fn site_config(&self) -> String {
        read_or_empty(&self.prefix.site)
    }

    /// A TLS handshake with the HTTPS port offering only `version` (rustls:
    /// TLS 1.2 or 1.3); the negotiated version, or why it failed.
    pub fn handshake(
        &self,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Result<rustls::ProtocolVersion, String> {
        tls_handshake_with(self.https_port, &self.cert.ca_der, &[version])
    }

    /// `openssl s_client` offering only the protocol `flag` (e.g. "-tls1_1")
    /// to the HTTPS port, with every cipher and security level 0 on the
    /// client side, so only the server can refuse. `None` (after printing a
    /// note) when there is no `openssl` binary; else whether the handshake
    /// completed, with s_client's output.
    pub fn openssl_handshake(&self, flag: &str) -> Option<(bool, String)> {
        openssl_handshake(self.https_port, flag)
    }
}

/// See [`Nginx::openssl_handshake`].
pub fn openssl_handshake(port: u16, flag: &str) -> Option<(bool, String)> {
    let openssl = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("openssl")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin/openssl")])
        .find(|p| p.is_file());
    let Some(openssl) = openssl else {
        eprintln!("NOTE: no `openssl` binary: the {flag} handshake check is skipped");
        return None;
    };
    let mut child = Command::new(openssl)
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), flag])
        .args(["-servername", SERVER_NAME, "-cipher", "ALL:@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait for openssl").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("openssl output");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // s_client exits 0 after a completed handshake (stdin at EOF), 1 when
    // the handshake fails; a completed one prints the negotiated protocol.
    let completed = out.status.success() && text.contains("Protocol");
    Some((completed, text))
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(STOP_TIMEOUT, false);
        }
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Poll (bounded) until nginx on `port` completes a TLS handshake whose
/// certificate chains to `ca`; fail early when nginx exits.
fn wait_for_tls(process: &Guarded, port: u16, ca: &CertificateDer<'static>) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match tls_handshake(port, ca) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if !process.is_alive() {
            return Err(format!("nginx exited (last handshake attempt: {last})"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no TLS handshake on port {port} within {READY_TIMEOUT:?}: {last}"))
}

/// One TLS handshake with 127.0.0.1:`port`, as `localhost`, trusting only `ca`.
fn tls_handshake(port: u16, ca: &CertificateDer<'static>) -> Result<(), String> {
    tls_handshake_with(port, ca, rustls::DEFAULT_VERSIONS).map(|_| ())
}

/// [`tls_handshake`] offering only `versions`; the negotiated version.
pub fn tls_handshake_with(
    port: u16,
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ProtocolVersion, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| format!("CA: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(2)));
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("handshake: {e}")),
        }
    }
    tls.protocol_version().ok_or_else(|| "no protocol version after the handshake".to_owned())
}

//! Test support: a private CA minting bundles, a real nginx on a free loopback port, and the
//! real `openssl` command.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certledger_ca::{
    Authority, AuthorityConfig, IssueRequest, KeyAlgorithm, MemoryKeyStore, generate_key,
};
use certledger_deployment::{Bundle, PrivateKeyPem, VerifyOptions, wait_for_fingerprint};
use time::OffsetDateTime;

pub const SNI: &str = "www.example.test";

/// A private CA (root + intermediate) in a temporary directory.
pub struct TestCa {
    _dir: tempfile::TempDir,
    _keys: MemoryKeyStore,
    pub authority: Authority,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = MemoryKeyStore::new();
        let authority = Authority::open_or_create(
            &AuthorityConfig::new(dir.path().join("ca")),
            &keys,
            OffsetDateTime::now_utc(),
        )
        .expect("create CA");
        Self {
            _dir: dir,
            _keys: keys,
            authority,
        }
    }

    /// A leaf for `dns` (and optionally IP addresses) with a freshly generated P-256 key;
    /// the chain is the intermediate.
    pub fn bundle(&self, certificate_id: &str, dns: &[&str], ips: &[IpAddr]) -> Bundle {
        let key = generate_key(KeyAlgorithm::EcdsaP256).expect("generate key");
        let mut request = IssueRequest::new(key.public_key.clone());
        request.dns_names = dns.iter().map(|d| d.to_string()).collect();
        request.ip_addresses = ips.to_vec();
        let pending = self
            .authority
            .prepare(&request, OffsetDateTime::now_utc())
            .expect("prepare");
        let intent = pending.intent().clone();
        let issued = pending.release(&intent).expect("release");
        let bundle = Bundle::new(
            certificate_id,
            &issued.pem,
            &self.authority.intermediate().pem,
            Some(PrivateKeyPem::new(
                key.private_key.expose_pkcs8_pem().as_str(),
            )),
        )
        .expect("bundle");
        assert_eq!(bundle.fingerprint(), issued.sha256_fingerprint);
        bundle
    }

    pub fn root_pem(&self) -> &str {
        &self.authority.root().pem
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx is not installed: apt-get install -y nginx-light");
}

/// A real nginx master (with its workers) serving TLS on a free loopback port from its own
/// prefix directory, started in the foreground as our child in its own process group, and
/// stopped on drop (also when a test panics).
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub conf_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Writes `initial`'s files and the configuration, starts nginx, and waits until it
    /// serves `initial`.
    pub async fn start(initial: &Bundle) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssl = dir.path().join("ssl");
        std::fs::create_dir(&ssl).expect("ssl dir");
        let cert_path = ssl.join("site.crt");
        let key_path = ssl.join("site.key");
        std::fs::write(&cert_path, initial.full_chain_pem()).expect("write cert");
        std::fs::write(&key_path, initial.private_key().expect("key").expose_pem())
            .expect("write key");
        let mut nginx = Nginx {
            port: free_port(),
            conf_path: dir.path().join("nginx.conf"),
            cert_path,
            key_path,
            dir,
            child: None,
        };
        nginx.write_config("");

        let stderr = File::create(nginx.dir.path().join("stderr.log")).expect("stderr log");
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(nginx.dir.path())
            .arg("-c")
            .arg(&nginx.conf_path)
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .spawn()
            .expect("start nginx");
        nginx.child = Some(child);

        let options = VerifyOptions {
            deadline: Duration::from_secs(15),
            ..VerifyOptions::default()
        };
        if let Err(failure) =
            wait_for_fingerprint(&nginx.address(), Some(SNI), initial.fingerprint(), &options).await
        {
            panic!(
                "nginx did not come up serving the initial certificate: {failure:?}\n\
                 stderr: {}\nerror.log: {}",
                nginx.read("stderr.log"),
                nginx.read("error.log")
            );
        }
        nginx
    }

    /// (Re)writes nginx.conf; `extra_server` is added inside the server block.
    pub fn write_config(&self, extra_server: &str) {
        let d = self.dir.path().display();
        let conf = format!(
            r#"user www-data;
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {SNI};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {extra_server}
        return 200 "ok\n";
    }}
}}
"#,
            port = self.port,
            cert = self.cert_path.display(),
            key = self.key_path.display(),
        );
        let mut f = File::create(&self.conf_path).expect("write nginx.conf");
        f.write_all(conf.as_bytes()).expect("write nginx.conf");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `nginx -p <dir> -c <conf> -s reload`.
    pub fn reload_command(&self) -> Vec<String> {
        vec![
            nginx_binary().display().to_string(),
            "-p".into(),
            self.dir.path().display().to_string(),
            "-c".into(),
            self.conf_path.display().to_string(),
            "-s".into(),
            "reload".into(),
        ]
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        // Fast shutdown: the master stops its workers and waits for them before exiting.
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still there: kill the whole process group (master and workers).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        let _ = child.wait();
    }
}

/// What `openssl s_client` sees served at `address` with SNI `sni`, as the fingerprint
/// `openssl x509 -fingerprint -sha256` prints (normalized to lower-case hex).
pub fn openssl_served_fingerprint(address: &str, sni: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", address, "-servername", sni])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("-----BEGIN CERTIFICATE-----"),
        "s_client printed no certificate:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl x509");
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(stdout.as_bytes())
        .expect("pipe to openssl x509");
    let out = x509.wait_with_output().expect("openssl x509");
    assert!(out.status.success(), "openssl x509 failed: {out:?}");
    // "sha256 Fingerprint=AB:CD:…" (OpenSSL 3) or "SHA256 Fingerprint=…".
    let text = String::from_utf8_lossy(&out.stdout);
    let value = text
        .trim()
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("unexpected openssl x509 output: {text}"));
    certledger_deployment::normalize_fingerprint(value)
}

//! HTTPS and WSS served by the real `audin-server` binary itself
//! (`--tls-cert`, `--tls-key`; issue 15, TLS): the native SDK trusting a
//! test CA goes online and places a sim call over `wss`; plain HTTP on the
//! TLS port fails cleanly; `SIGHUP` swaps the certificate for new
//! connections while an open WebSocket stays up, and a bad file keeps the
//! old one.
//!
//! The test PKI is made at test time with `/usr/bin/openssl` (a CA, a
//! leaf with an RSA PKCS#1 key, a second leaf with an EC SEC1 key).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use audin_operator::AudinOperator;
use audin_operator::core::{CallState, Event, PresenceState};
use audin_testkit::support::{EventLog, MILANO, MILANO_E164, SIM_ECHO, account_token};
use audin_testkit::{ServerOptions, ServerProcess, temp_dir};
use tokio::time::Instant;

const OPENSSL: &str = "/usr/bin/openssl";
/// Bound of every wait below (a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(15);

/// A test CA and two leaf certificates for 127.0.0.1 it signed.
struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(OPENSSL)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = temp_dir(tag).expect("temp dir");
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Audin Test CA",
            ],
        );
        // Leaf 1: RSA, PKCS#1 ("RSA PRIVATE KEY").
        openssl(
            &dir,
            &["genrsa", "-traditional", "-out", "leaf1.key", "2048"],
        );
        // Leaf 2: EC, SEC1 ("EC PRIVATE KEY").
        openssl(
            &dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "leaf2.key",
            ],
        );
        for (n, serial) in [(1, "1001"), (2, "1002")] {
            let key = format!("leaf{n}.key");
            let csr = format!("leaf{n}.csr");
            let pem = format!("leaf{n}.pem");
            openssl(
                &dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    &pem,
                ],
            );
        }
        let pki = Pki { dir };
        assert!(pki.read("leaf1.key").contains("BEGIN RSA PRIVATE KEY"));
        assert!(pki.read("leaf2.key").contains("BEGIN EC PRIVATE KEY"));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// Installs leaf `n` as the files the server reads.
    fn install(&self, n: u32) {
        std::fs::copy(self.path(&format!("leaf{n}.pem")), self.path("server.pem")).unwrap();
        std::fs::copy(self.path(&format!("leaf{n}.key")), self.path("server.key")).unwrap();
    }
}

/// A `--dev` server on the PKI's `server.pem`/`server.key`.
async fn tls_server(pki: &Pki) -> ServerProcess {
    let opts = ServerOptions::default()
        .arg("--tls-cert", pki.path("server.pem").display())
        .arg("--tls-key", pki.path("server.key").display())
        // The handshake failures are DEBUG lines.
        .env("RUST_LOG", "audin_server=debug");
    let server = ServerProcess::spawn(opts).await.expect("server starts");
    assert_eq!(server.scheme, "https", "{}", server.logs());
    server
}

/// An HTTP client trusting the test CA only.
fn https_client(pki: &Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.read("ca.pem").as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A native SDK operator on `server` trusting the test CA.
fn operator(server: &ServerProcess, pki: &Pki) -> AudinOperator {
    let http = https_client(pki);
    let base = server.url();
    let key = server.key();
    AudinOperator::builder(server.url())
        .add_root_certificates_pem(pki.read("ca.pem"))
        .get_token(move || {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move { account_token(&http, &base, &key, "op-tls", &[MILANO]).await }
        })
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("operator builds")
}

/// The serial of the certificate a new TLS connection to `server` gets.
async fn served_serial(server: &ServerProcess, pki: &Pki) -> String {
    let addr = server.addr.to_string();
    let ca = pki.path("ca.pem");
    tokio::task::spawn_blocking(move || {
        let script = format!(
            "timeout 10 {OPENSSL} s_client -connect {addr} -CAfile {} -verify_return_error \
             </dev/null 2>/dev/null | {OPENSSL} x509 -noout -serial",
            ca.display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
    .await
    .unwrap()
}

async fn log_shows(server: &ServerProcess, text: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if server.logs().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn sighup(server: &ServerProcess) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_sdk_goes_online_and_calls_over_wss_with_a_test_ca() {
    let pki = Pki::new("https-sdk");
    pki.install(1);
    let server = tls_server(&pki).await;
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let op = operator(&server, &pki);
    let online = tokio::time::timeout(WAIT, op.go_online([MILANO])).await;
    let availability = online
        .expect("online in time")
        .unwrap_or_else(|e| panic!("online over wss: {e:?}\n{}", server.logs()));
    assert_eq!(availability.accepted, vec![MILANO.to_owned()]);
    let call = tokio::time::timeout(WAIT, op.dial(SIM_ECHO, MILANO_E164))
        .await
        .expect("dial in time")
        .expect("dial accepted");
    tokio::time::timeout(WAIT, call.wait_for(CallState::Active))
        .await
        .expect("the call is answered over wss");
    // The echo returns what we send: audio flows both ways over the audio
    // wss socket.
    let audio = call.audio();
    let heard = tokio::time::timeout(WAIT, async {
        loop {
            audio.send_frame([0x55; 160]);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(frame) = audio.try_recv_frame() {
                return frame;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "no audio frame over wss");
    call.hangup();
    tokio::time::timeout(WAIT, call.ended())
        .await
        .expect("ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_fails_cleanly() {
    let pki = Pki::new("https-plain");
    pki.install(1);
    let server = tls_server(&pki).await;
    let plain = format!("http://{}/healthz", server.addr);
    let refused = reqwest::Client::new()
        .get(&plain)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "plain HTTP must not be served on the TLS port: {refused:?}"
    );
    assert!(
        log_shows(&server, "TLS handshake failed").await,
        "the refused handshake is logged: {}",
        server.logs()
    );
    // Logged at DEBUG only, and the server carries on.
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("TLS handshake failed"))
        .unwrap();
    assert!(line.contains("DEBUG"), "{line}");
    assert!(!logs.contains("panicked"), "{logs}");
    let healthy = https_client(&pki)
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .expect("https still served");
    assert!(healthy.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_keeps_open_sockets() {
    let pki = Pki::new("https-hup");
    pki.install(1);
    let mut server = tls_server(&pki).await;
    assert_eq!(served_serial(&server, &pki).await, "serial=03E9");
    let op = operator(&server, &pki);
    let log = EventLog::record(&op);
    tokio::time::timeout(WAIT, op.go_online([MILANO]))
        .await
        .expect("online in time")
        .expect("online");
    let online_at = Instant::now();

    // Renewal: new files (another key type too), then SIGHUP.
    pki.install(2);
    sighup(&server);
    assert!(
        log_shows(&server, "TLS certificate reloaded").await,
        "{}",
        server.logs()
    );
    assert_eq!(
        served_serial(&server, &pki).await,
        "serial=03EA",
        "a new connection gets the new certificate"
    );

    // A broken file: the certificate in use stays, an ERROR says so.
    std::fs::write(
        pki.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\ntruncated",
    )
    .unwrap();
    sighup(&server);
    assert!(
        log_shows(&server, "TLS certificate NOT reloaded").await,
        "{}",
        server.logs()
    );
    assert_eq!(served_serial(&server, &pki).await, "serial=03EA");
    assert!(server.is_running(), "a bad file never stops the server");

    // The presence socket opened before both reloads never dropped.
    assert_eq!(op.state(), PresenceState::Online);
    let dropped = log.since(online_at, |e| match e {
        Event::PresenceStateChanged { state } if *state != PresenceState::Online => Some(*state),
        _ => None,
    });
    assert!(dropped.is_empty(), "presence changed: {dropped:?}");
    // And it still works: a call over the same presence socket.
    let call = tokio::time::timeout(WAIT, op.dial(SIM_ECHO, MILANO_E164))
        .await
        .expect("dial in time")
        .expect("dial accepted");
    tokio::time::timeout(WAIT, call.wait_for(CallState::Active))
        .await
        .expect("answered");
    call.hangup();

    // No key material in the log, whatever happened.
    let logs = server.logs();
    for key in ["leaf1.key", "leaf2.key"] {
        let body = pki.read(key);
        let line = body.lines().nth(1).unwrap();
        assert!(!logs.contains(line), "key material of {key} in the log");
    }
    server.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_or_a_missing_partner_fails_the_start_naming_the_flag() {
    let pki = Pki::new("https-bad");
    openssl(
        &pki.dir,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "leaf2.key",
            "-out",
            "enc.key",
            "-passout",
            "pass:secret",
        ],
    );
    let start = |args: Vec<(&'static str, PathBuf)>| async move {
        let mut opts = ServerOptions::default();
        for (flag, path) in args {
            opts = opts.arg(flag, path.display());
        }
        ServerProcess::spawn(opts)
            .await
            .expect_err("the start must fail")
            .to_string()
    };
    let mismatch = start(vec![
        ("--tls-cert", pki.path("leaf1.pem")),
        ("--tls-key", pki.path("leaf2.key")),
    ])
    .await;
    assert!(
        mismatch.contains("--tls-key") && mismatch.contains("is not the private key"),
        "{mismatch}"
    );
    let encrypted = start(vec![
        ("--tls-cert", pki.path("leaf2.pem")),
        ("--tls-key", pki.path("enc.key")),
    ])
    .await;
    assert!(encrypted.contains("the key is encrypted"), "{encrypted}");
    let alone = start(vec![("--tls-cert", pki.path("leaf1.pem"))]).await;
    assert!(alone.contains("--tls-cert needs --tls-key"), "{alone}");
    for out in [&mismatch, &encrypted, &alone] {
        for key in ["leaf1.key", "leaf2.key", "enc.key"] {
            let line = pki.read(key).lines().nth(1).unwrap().to_owned();
            assert!(!out.contains(&line), "key material of {key} printed");
        }
    }
}

#[tokio::test]
async fn a_root_certificate_file_without_a_certificate_is_a_config_error() {
    let built = AudinOperator::builder("https://127.0.0.1:1")
        .add_root_certificates_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .get_token(|| async { Err("unused".to_owned()) })
        .build();
    let e = built.expect_err("no certificate in it");
    assert_eq!(e.code, audin_operator::core::ErrorCode::InvalidConfig);
    assert!(
        e.message.contains("no -----BEGIN CERTIFICATE-----"),
        "{}",
        e.message
    );
}

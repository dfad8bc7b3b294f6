//! TLS both ways, with certificates made here (rcgen): HTTPS regions behind a private CA
//! (`ca_file`), regions that require the proxy's client certificate (mTLS), TLS failures named
//! as such, and the proxy's own HTTPS listener, reloaded on SIGHUP and when its files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cinder_sim::{SimConfig, SimRegion};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::Value;
use tower::ServiceExt;
use vbs_proxy::{AppState, Config};

use crate::support::{rows, sigterm, PROJECT, TOKEN};

/// A certificate authority of the test's own.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Authority { cert, key }
    }

    /// A leaf for `localhost` and 127.0.0.1, signed by this authority: (cert PEM, key PEM).
    fn issue(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// A directory of its own for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vbs-proxy-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn pem_certs(pem: &str) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A simulated region served over HTTPS on 127.0.0.1 with `(cert, key)`; when `client_ca`
/// is given, only clients with a certificate it signed get through. Returns `https://...`.
async fn tls_region(
    sim: &Arc<SimRegion>,
    leaf: &(String, String),
    client_ca: Option<&str>,
) -> String {
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(ca) {
                roots.add(cert).expect("root");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                ring(),
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(pem_certs(&leaf.0), key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = sim.router();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(request.map(axum::body::Body::new))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("https://localhost:{port}")
}

/// The router for `toml` on loopback: its base URL.
async fn proxy(toml: &str) -> String {
    let config = Config::from_toml(toml).expect("valid test config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = vbs_proxy::router(AppState::new(config))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn list(base: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}/v3/{PROJECT}/backups/detail"))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).expect("JSON"))
}

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn a_region_behind_a_private_ca_is_reached_with_ca_file_and_a_tls_failure_says_tls() {
    let ca = Authority::new("private regions CA");
    let sim = SimRegion::new(SimConfig::default(), rows("p", 3));
    let url = tls_region(&sim, &ca.issue("region"), None).await;
    let dir = scratch("private-ca");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let region = format!("[[regions]]\nname = \"r0\"\nurl = \"{url}\"\n[cache]\nttl = \"0s\"\n");

    // Without the CA: the region's certificate is not trusted, and every report says TLS.
    let untrusting = proxy(&region).await;
    let (status, body) = list(&untrusting).await;
    assert_eq!(status, 503, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("TLS failed") && message.contains("UnknownIssuer"),
        "the client is told it was TLS, and why: {message}"
    );
    assert!(
        scrape(&untrusting)
            .await
            .contains("vbs_upstream_calls_total{region=\"r0\",outcome=\"tls\"} 1"),
        "counted once as tls (a TLS failure is not retried)"
    );
    assert_eq!(sim.calls(), 0);

    // With it: the rows.
    let trusting = proxy(&format!("[upstream]\nca_file = {:?}\n{region}", ca_file)).await;
    let (status, body) = list(&trusting).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backups"].as_array().map(Vec::len), Some(3));
    // The rustls upstream also reaches a region whose certificate is trusted through its own
    // [[regions]] entry, over the [upstream] default.
    let per_region = proxy(&format!(
        "[[regions]]\nname = \"r0\"\nurl = \"{url}\"\nca_file = {:?}\n[cache]\nttl = \"0s\"\n",
        ca_file
    ))
    .await;
    assert_eq!(list(&per_region).await.0, 200);
}

#[tokio::test]
async fn a_region_that_requires_a_client_certificate_gets_the_proxys() {
    let ca = Authority::new("regions CA");
    let clients = Authority::new("clients CA");
    let sim = SimRegion::new(SimConfig::default(), rows("m", 2));
    let url = tls_region(&sim, &ca.issue("region"), Some(&clients.pem())).await;
    let dir = scratch("mtls");
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let (cert, key) = clients.issue("vbs-proxy");
    let cert_file = write(&dir, "client.crt", &cert);
    let key_file = write(&dir, "client.key", &key);
    let region = format!("[[regions]]\nname = \"r0\"\nurl = \"{url}\"\n");

    let anonymous = proxy(&format!(
        "[upstream]\nca_file = {ca_file:?}\n{region}[cache]\nttl = \"0s\"\n"
    ))
    .await;
    let (status, body) = list(&anonymous).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("TLS failed"), "{body}");
    assert_eq!(
        sim.calls(),
        0,
        "the region never served the anonymous proxy"
    );

    let with_certificate = proxy(&format!(
        "[upstream]\nca_file = {ca_file:?}\n{region}cert_file = {cert_file:?}\nkey_file = {key_file:?}\n[cache]\nttl = \"0s\"\n"
    ))
    .await;
    let (status, body) = list(&with_certificate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backups"].as_array().map(Vec::len), Some(2));
    assert_eq!(sim.calls(), 1);
}

#[test]
fn bad_tls_files_are_configuration_errors_that_name_the_key() {
    let dir = scratch("bad-files");
    let not_pem = write(&dir, "not.pem", "this is not a certificate\n");
    let ca = Authority::new("ca");
    let (cert, _) = ca.issue("leaf");
    let cert_file = write(&dir, "leaf.crt", &cert);
    let region = "[[regions]]\nname = \"r0\"\nurl = \"https://127.0.0.1:9\"\n";
    let error = |toml: String| match Config::from_toml(&toml) {
        Ok(_) => panic!("accepted: {toml}"),
        Err(e) => e.to_string(),
    };

    let e = error(format!("[upstream]\nca_file = {not_pem:?}\n{region}"));
    assert!(
        e.contains("`upstream.ca_file`") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = error(format!("{region}ca_file = \"/nonexistent/ca.pem\"\n"));
    assert!(
        e.contains("`regions[0].ca_file`") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
    let e = error(format!("{region}cert_file = {cert_file:?}\n"));
    assert!(
        e.contains("`regions[0].cert_file`") && e.contains("needs key_file"),
        "{e}"
    );
    let e = error(format!(
        "{region}cert_file = {cert_file:?}\nkey_file = {not_pem:?}\n"
    ));
    assert!(
        e.contains("`regions[0].key_file`") && e.contains("no PEM private key"),
        "{e}"
    );
    let e = error(format!("[server]\ntls_cert_file = {cert_file:?}\n{region}"));
    assert!(
        e.contains("`server.tls_cert_file`") && e.contains("tls_key_file"),
        "{e}"
    );
    let e = error(format!(
        "[server]\ntls_cert_file = {not_pem:?}\ntls_key_file = {not_pem:?}\n{region}"
    ));
    assert!(e.contains("`server.tls_cert_file`"), "{e}");
}

/// The certificate a fresh HTTPS connection to `addr` is served, and the listing's first link.
async fn served_over_https(addr: &str, ca: &str) -> (Vec<u8>, String) {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let port = addr.rsplit(':').next().expect("port");
    let response = client
        .get(format!(
            "https://localhost:{port}/v3/{PROJECT}/backups/detail?limit=1"
        ))
        .header("X-Auth-Token", TOKEN)
        .send()
        .await
        .expect("served over HTTPS");
    assert_eq!(response.status(), 200);
    let certificate = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a peer certificate")
        .to_vec();
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
    let link = body["backups_links"][0]["href"]
        .as_str()
        .expect("a next link")
        .to_string();
    (certificate, link)
}

fn der(pem: &str) -> Vec<u8> {
    pem_certs(pem)[0].to_vec()
}

/// Reads the proxy's JSON log until a line with this message.
fn wait_for_log(lines: &mut impl Iterator<Item = std::io::Result<String>>, message: &str) -> Value {
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["fields"]["message"] == message {
                return v;
            }
        }
    }
    panic!("the proxy exited before logging {message:?}");
}

#[tokio::test]
async fn the_listener_serves_https_and_takes_a_new_certificate_on_sighup_and_on_change() {
    let ca = Authority::new("listener CA");
    let sim = SimRegion::new(SimConfig::default(), rows("l", 3));
    let region_url = sim.spawn().await.expect("region");
    let dir = scratch("listener");
    let first = ca.issue("first");
    let cert_file = write(&dir, "tls.crt", &first.0);
    let key_file = write(&dir, "tls.key", &first.1);

    for (reload_check, by_signal) in [("1h", true), ("50ms", false)] {
        let config = write(
            &dir,
            "proxy.toml",
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = {cert_file:?}\ntls_key_file = {key_file:?}\ntls_reload_check = \"{reload_check}\"\n[[regions]]\nname = \"r0\"\nurl = \"{region_url}\"\n"
            ),
        );
        std::fs::write(&cert_file, &first.0).expect("write");
        std::fs::write(&key_file, &first.1).expect("write");
        let (child, mut lines, addr) = crate::support::spawn_serve(&config, &[]);
        let (served, link) = served_over_https(&addr, &ca.pem()).await;
        assert_eq!(served, der(&first.0), "the configured certificate");
        assert!(
            link.starts_with("https://localhost:"),
            "links say https: {link}"
        );

        let next = ca.issue("renewed");
        std::fs::write(&key_file, &next.1).expect("write");
        std::fs::write(&cert_file, &next.0).expect("write");
        if by_signal {
            let sent = std::process::Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
        }
        let logged = tokio::task::spawn_blocking(move || {
            let logged = wait_for_log(&mut lines, "TLS certificate reloaded");
            (logged, lines)
        })
        .await
        .expect("log reader");
        assert_eq!(logged.0["fields"]["forced"], by_signal, "{}", logged.0);
        let (served, _) = served_over_https(&addr, &ca.pem()).await;
        assert_eq!(
            served,
            der(&next.0),
            "the renewed certificate, without a restart"
        );

        // A broken pair is logged and the certificate in use stays.
        if by_signal {
            std::fs::write(&cert_file, "not a certificate").expect("write");
            let sent = std::process::Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success());
            let mut lines = logged.1;
            let warned = tokio::task::spawn_blocking(move || {
                wait_for_log(
                    &mut lines,
                    "TLS certificate files did not load; still serving the previous certificate",
                )
            })
            .await
            .expect("log reader");
            assert!(warned["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("tls.crt")));
            let (served, _) = served_over_https(&addr, &ca.pem()).await;
            assert_eq!(served, der(&next.0));
        }

        // Plain HTTP on the TLS port is not served.
        let plain = reqwest::get(format!("http://{addr}/healthz")).await;
        assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));
        sigterm(&child);
        let mut child = child;
        assert!(child.wait().expect("exits").success());
    }
}

#[tokio::test]
async fn a_tls_client_that_never_finishes_its_handshake_is_let_go() {
    use tokio::io::AsyncReadExt;
    let ca = Authority::new("slow CA");
    let sim = SimRegion::new(SimConfig::default(), rows("s", 1));
    let region_url = sim.spawn().await.expect("region");
    let dir = scratch("handshake");
    let (cert, key) = ca.issue("proxy");
    let config = write(
        &dir,
        "proxy.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"200ms\"\ntls_cert_file = {:?}\ntls_key_file = {:?}\n[[regions]]\nname = \"r0\"\nurl = \"{region_url}\"\n",
            write(&dir, "tls.crt", &cert),
            write(&dir, "tls.key", &key)
        ),
    );
    let (child, _lines, addr) = crate::support::spawn_serve(&config, &[]);
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the proxy closes the connection, it does not hold it");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
    sigterm(&child);
    let mut child = child;
    assert!(child.wait().expect("exits").success());
}

//! TLS to the PACS: verification is on by default (an unknown issuer is a clear error),
//! `--ca-cert` trusts a private CA, and `--insecure` works only with a loud warning.
//! The server is `openssl s_server` with a certificate signed by a throwaway CA.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed (scripts/test.sh installs it)");
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

#[test]
fn tls_is_verified_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=segbridge-test-ca",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _srv = Server(
        Command::new("openssl")
            .current_dir(d)
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "srv.pem",
                "-key",
                "srv.key",
                "-WWW",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}/dicom-web");
    let run = |extra: &[&str]| {
        segbridge(d)
            .args([
                "scan",
                "--json",
                "--dicomweb",
                &url,
                "--request-timeout",
                "5",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    // default: the unknown issuer is refused, and the error says so
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        e.contains("certificate") || e.contains("unknownissuer"),
        "{e}"
    );
    // the CA trusted: TLS passes (s_server then answers what it answers, not a TLS error)
    let o = run(&["--ca-cert", d.join("ca.pem").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        !e.contains("certificate") && !e.contains("unknownissuer"),
        "{e}"
    );
    // --insecure: passes, with the warning
    let o = run(&["--insecure"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--insecure: TLS certificates") && e.contains("NOT verified"),
        "{e}"
    );
    assert!(!e.to_lowercase().contains("unknownissuer"), "{e}");
    // a CA file that is not PEM is a clear configuration error
    std::fs::write(d.join("bad.pem"), "not a certificate").unwrap();
    let o = run(&["--ca-cert", d.join("bad.pem").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.pem"));
}

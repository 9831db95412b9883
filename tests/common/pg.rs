//! A PostgreSQL server of a test's own, for what the shared test server cannot be used for
//! (stopping it under running processes): Debian's server binaries (SEGBRIDGE_TEST_PG_BIN, else
//! the newest /usr/lib/postgresql/*/bin), a new cluster in a temporary directory, on a free
//! loopback port. Run as the postgres user when the tests run as root (initdb refuses root).

use std::path::PathBuf;
use std::process::Command;

use super::free_port;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
    tls: bool,
    /// The admin DSN (trust authentication, loopback only).
    pub dsn: String,
}

fn server_bin() -> PathBuf {
    if let Ok(b) = std::env::var("SEGBRIDGE_TEST_PG_BIN") {
        return PathBuf::from(b);
    }
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    bins.retain(|b| b.join("initdb").exists());
    bins.sort();
    bins.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's server is not installed: run scripts/test.sh (it installs postgresql)")
    })
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// A server that takes TLS connections only (`hostssl`), its certificate (for 127.0.0.1)
    /// signed by a CA of its own: [`PgServer::ca`].
    pub fn start_tls_only() -> PgServer {
        PgServer::start_with(true)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool) -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let st = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown postgres {}", dir.path().display());
        }
        let port = free_port();
        let mut pg = PgServer {
            dsn: format!("postgres://segbridge@127.0.0.1:{port}/postgres"),
            dir,
            bin: server_bin(),
            port,
            running: false,
            tls,
        };
        let data = pg.dir.path().join("data");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "segbridge", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            pg.make_certificates(&data);
        }
        pg.start_again();
        pg
    }

    /// A CA, and a server certificate for 127.0.0.1 it signs; TLS-only access rules.
    fn make_certificates(&self, data: &std::path::Path) {
        let d = self.dir.path();
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        ssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=segbridge test CA",
        ]);
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "san.ext",
        ]);
        for f in ["server.crt", "server.key"] {
            std::fs::copy(d.join(f), data.join(f)).unwrap();
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        if is_root() {
            let st = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(data)
                .status()
                .unwrap();
            assert!(st.success());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts the server (again) on the same port and directory.
    pub fn start_again(&mut self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off{}",
                self.port,
                self.dir.path().display(),
                if self.tls { " -c ssl=on" } else { "" }
            ))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server (fast: sessions are cut, as in a restart).
    pub fn stop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
        self.running = false;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

//! The shared store: PostgreSQL, through the `postgres` crate (rust-postgres: the maintained
//! synchronous client, the same code as `tokio-postgres`).
//!
//! The ledger's API is synchronous and is called from async code; `postgres::Client` runs its
//! own small runtime and must not be driven from inside tokio's. So one thread owns the
//! connection and runs the statements sent to it, one at a time, in order: a transaction is
//! the statements between `BEGIN` and `COMMIT` on that one connection. A connection that
//! breaks is made again at the next statement, except inside a transaction: there every
//! statement fails until the caller's `ROLLBACK`, so nothing half-done is ever committed.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::db::{dollar_placeholders, DbError, Dialect, Row, Sql, Val};

/// A DSN with its password kept out of anything shown: `postgres://user@host:port/db`.
#[derive(Clone)]
pub struct Dsn {
    config: std::sync::Arc<Config>,
    shown: String,
    /// TLS, unless `sslmode=disable`: the server's certificate is checked against the
    /// web's roots, or against the CA in `PGSSLROOTCERT` (libpq's variable) when set.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The TLS client: rustls (as the PACS and API clients use), roots from `PGSSLROOTCERT` when
/// set, else the web's.
fn tls_client() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match std::env::var("PGSSLROOTCERT")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("PGSSLROOTCERT {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("PGSSLROOTCERT {path}: no certificate in it"));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("PGSSLROOTCERT {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Dsn {
    /// Parses a `postgres://` URL (or `key=value` string). The password comes from the URL or,
    /// when it has none, from `PGPASSWORD`; it is never part of [`Dsn::shown`] nor of an error.
    pub fn parse(s: &str) -> Result<Dsn, String> {
        // libpq's verify-ca and verify-full: segbridge always checks the certificate (and the
        // host name), so they mean what `require` does here
        let s = &s
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config = Config::from_str(s).map_err(|e| {
            // the parser's message may quote the string, password and all
            let what = e.to_string();
            if s.contains('@') || s.contains("password") {
                "not a valid PostgreSQL connection string".to_string()
            } else {
                format!("not a valid PostgreSQL connection string: {what}")
            }
        })?;
        if config.get_password().is_none() {
            if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("segbridge");
        }
        // the server's notices ("no transaction in progress" after a cut connection's
        // rollback, and the like) are for debugging, not for the operator's log
        config.notice_callback(|n| tracing::debug!("PostgreSQL: {}", n.message()));
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let host = match (hosts.first(), ports.first()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.clone(),
            _ => "localhost".into(),
        };
        let shown = format!(
            "postgres://{}{host}/{}",
            config
                .get_user()
                .map(|u| format!("{u}@"))
                .unwrap_or_default(),
            config.get_dbname().unwrap_or("")
        );
        // TLS unless disabled: `prefer` (the default) falls back to plain only when the
        // server offers no TLS; `require` never does. The certificate is always checked.
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(tls_client()?),
        };
        Ok(Dsn {
            config: std::sync::Arc::new(config),
            shown,
            tls,
        })
    }

    /// Whether a `--state` value names PostgreSQL rather than a file.
    pub fn is_dsn(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                    n.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Val::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn read(row: &postgres::Row) -> Result<Row, DbError> {
    let bad = |e: postgres::Error| DbError::Postgres(e.to_string());
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in row.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Val::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|n| Val::Int(n.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|n| Val::Int(n.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(|b| Val::Int(b.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR | Type::UNKNOWN => row
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map(Val::Text),
            ref t => {
                return Err(DbError::Column {
                    index: i,
                    want: "an integer or text column",
                    found: t.to_string(),
                })
            }
        };
        out.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(out))
}

enum Kind {
    Exec,
    Rows,
    Batch,
}

enum Answer {
    Count(u64),
    Rows(Vec<Row>),
    Done,
}

struct Job {
    kind: Kind,
    q: String,
    args: Vec<Val>,
    reply: mpsc::SyncSender<Result<Answer, DbError>>,
}

/// A connection to PostgreSQL, owned by its own thread.
pub(super) struct Pg {
    jobs: mpsc::Sender<Job>,
}

impl Pg {
    /// Connects (so that a wrong DSN or an unreachable server is said at once).
    pub fn connect(dsn: &Dsn) -> Result<Pg, DbError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let mut w = Worker {
            tls: dsn.tls.clone(),
            config: (*dsn.config).clone(),
            client: None,
            stmts: HashMap::new(),
            in_tx: false,
            broken: false,
        };
        // connected on its own thread too: the caller may be inside a tokio runtime
        let (ready_tx, ready) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("segbridge-pg".into())
            .spawn(move || {
                let first = w.client().map(|_| ());
                let ok = first.is_ok();
                let _ = ready_tx.send(first);
                if !ok {
                    return;
                }
                for job in rx {
                    let answer = w.run(&job);
                    let _ = job.reply.send(answer);
                }
            })
            .map_err(|e| DbError::Unreachable(format!("cannot start its thread: {e}")))?;
        ready
            .recv()
            .map_err(|_| DbError::Unreachable("the connection's thread stopped".into()))??;
        Ok(Pg { jobs: tx })
    }

    fn ask(&self, kind: Kind, q: &str, args: &[Val]) -> Result<Answer, DbError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            kind,
            q: q.to_string(),
            args: args.to_vec(),
            reply,
        };
        let gone = || DbError::Unreachable("the connection's thread stopped".into());
        self.jobs.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Sql for Pg {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&self, q: &str, args: &[Val]) -> Result<u64, DbError> {
        match self.ask(Kind::Exec, q, args)? {
            Answer::Count(n) => Ok(n),
            _ => Ok(0),
        }
    }

    fn rows(&self, q: &str, args: &[Val]) -> Result<Vec<Row>, DbError> {
        match self.ask(Kind::Rows, q, args)? {
            Answer::Rows(r) => Ok(r),
            _ => Ok(Vec::new()),
        }
    }

    fn batch(&self, q: &str) -> Result<(), DbError> {
        self.ask(Kind::Batch, q, &[]).map(|_| ())
    }
}

struct Worker {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    client: Option<Client>,
    stmts: HashMap<String, Statement>,
    in_tx: bool,
    /// The connection broke inside a transaction: everything fails until its `ROLLBACK`.
    broken: bool,
}

fn pg_error(e: postgres::Error) -> DbError {
    match e.as_db_error() {
        // a server shutting down, restarting or starting up (class 57P), or a connection
        // failure it reports (class 08): worth waiting for, like no answer at all
        Some(db) if db.code().code().starts_with("57P") || db.code().code().starts_with("08") => {
            DbError::Unreachable(format!("{}: {}", db.code().code(), db.message()))
        }
        // the SQLSTATE first: `DbError::is_retryable` reads it
        Some(db) => DbError::Postgres(format!("{}: {}", db.code().code(), db.message())),
        // the whole chain: "error performing TLS handshake" alone does not say why
        None => DbError::Unreachable(crate::util::error_chain(&e)),
    }
}

impl Worker {
    fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.stmts.clear();
            let client = match &self.tls {
                Some(tls) => self.config.connect(tls.clone()),
                None => self.config.connect(NoTls),
            };
            self.client = Some(client.map_err(|e| {
                let chain = crate::util::error_chain(&e);
                let hint = if chain.contains("certificate") {
                    ": the server's TLS certificate is not trusted; set PGSSLROOTCERT to its CA's \
                     PEM file (or sslmode=disable on a trusted network)"
                } else if chain.contains("does not support TLS") {
                    ": this server offers no TLS; leave sslmode out (or sslmode=disable) to \
                     connect without it"
                } else if chain.contains("password missing") {
                    ": no password: set PGPASSWORD (or put it in the URL)"
                } else {
                    ""
                };
                match pg_error(e) {
                    DbError::Unreachable(m) => DbError::Unreachable(format!("{m}{hint}")),
                    other => other,
                }
            })?);
        }
        Ok(self.client.as_mut().expect("connected just now"))
    }

    fn run(&mut self, job: &Job) -> Result<Answer, DbError> {
        let control = job.q.trim_start().to_ascii_uppercase();
        let ends = control.starts_with("COMMIT") || control.starts_with("ROLLBACK");
        if self.broken {
            if control.starts_with("ROLLBACK") && !control.contains(" TO ") {
                self.broken = false;
                self.in_tx = false;
                return Ok(Answer::Done);
            }
            return Err(DbError::Unreachable(
                "the connection broke during a transaction; it was not committed".into(),
            ));
        }
        if self.in_tx && self.client.as_ref().is_none_or(Client::is_closed) {
            self.broken = true;
            return Err(DbError::Unreachable(
                "the connection broke during a transaction; it was not committed".into(),
            ));
        }
        let r = self.run_on_client(job);
        if let Err(DbError::Unreachable(_)) = &r {
            if self.in_tx {
                self.broken = !ends;
            }
            self.client = None;
            self.stmts.clear();
        }
        if r.is_ok() || ends {
            if control.starts_with("BEGIN") {
                self.in_tx = true;
            } else if ends && !control.contains(" TO ") {
                self.in_tx = false;
            }
        }
        r
    }

    fn run_on_client(&mut self, job: &Job) -> Result<Answer, DbError> {
        if let Kind::Batch = job.kind {
            self.client()?.batch_execute(&job.q).map_err(pg_error)?;
            return Ok(Answer::Done);
        }
        self.client()?; // first: a new connection forgets the prepared statements
        let stmt = match self.stmts.get(&job.q) {
            Some(s) => s.clone(),
            None => {
                let text = dollar_placeholders(&job.q);
                let s = self.client()?.prepare(&text).map_err(pg_error)?;
                if self.stmts.len() > 256 {
                    self.stmts.clear();
                }
                self.stmts.insert(job.q.clone(), s.clone());
                s
            }
        };
        let args: Vec<&(dyn ToSql + Sync)> =
            job.args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let client = self.client()?;
        match job.kind {
            Kind::Exec => Ok(Answer::Count(
                client.execute(&stmt, &args).map_err(pg_error)?,
            )),
            _ => {
                let rows = client.query(&stmt, &args).map_err(pg_error)?;
                Ok(Answer::Rows(
                    rows.iter().map(read).collect::<Result<Vec<_>, _>>()?,
                ))
            }
        }
    }
}

//! The one small SQL interface the ledger is written against, so that its logic exists once
//! and runs on either store: [`Sql`] (statements with `?N` placeholders, values as [`Val`],
//! rows as [`Row`]), implemented by SQLite (`sqlite.rs`) and PostgreSQL (`pg.rs`).
//!
//! The SQL the ledger writes is the common part of both dialects: numbered placeholders
//! (`?1`, or `?` counted in order), `INSERT … ON CONFLICT … DO UPDATE`, `RETURNING`, integers
//! as 64-bit and text as text. What differs (the schema, its migrations, counting labels by
//! status) is asked of the [`Dialect`].

use crate::model::outbox::Section;
use crate::model::status::LabelStatus;

/// Which store a connection speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement or read from a row: the ledger stores only integers, text
/// and NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Val {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_string())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl From<LabelStatus> for Val {
    fn from(v: LabelStatus) -> Val {
        Val::Text(v.as_str().to_string())
    }
}
impl From<Section> for Val {
    fn from(v: Section) -> Val {
        Val::Text(v.as_str().to_string())
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}
impl<T: Clone + Into<Val>> From<&Option<T>> for Val {
    fn from(v: &Option<T>) -> Val {
        v.clone().map_or(Val::Null, Into::into)
    }
}

/// The arguments of a statement: `args![a, b]` is `[Val::from(a), Val::from(b)]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { [$($crate::ledger::db::Val::from($v)),*] };
}
pub(crate) use args;

/// One row of an answer.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn get(&self, i: usize) -> Result<&Val, DbError> {
        self.0.get(i).ok_or_else(|| DbError::Column {
            index: i,
            want: "a column",
            found: format!("{} columns", self.0.len()),
        })
    }

    fn wrong(i: usize, want: &'static str, v: &Val) -> DbError {
        DbError::Column {
            index: i,
            want,
            found: format!("{v:?}"),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.get(i)? {
            Val::Int(n) => Ok(*n),
            v => Err(Row::wrong(i, "an integer", v)),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.get(i)? {
            Val::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.get(i)? {
            Val::Text(s) => Ok(s.clone()),
            v => Err(Row::wrong(i, "text", v)),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.get(i)? {
            Val::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub fn status(&self, i: usize) -> Result<LabelStatus, DbError> {
        let s = self.text(i)?;
        s.parse().map_err(|_| DbError::Column {
            index: i,
            want: "a label status",
            found: s,
        })
    }

    pub fn section(&self, i: usize) -> Result<Section, DbError> {
        Ok(Section::parse(&self.text(i)?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Postgres(String),
    /// The PostgreSQL server could not be reached, or the connection broke.
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// A fenced write found its lease lost (expired, or taken over by another process).
    #[error("lease {lease} (epoch {epoch}) is no longer held: another process took over")]
    Fenced { lease: String, epoch: i64 },
    /// A write needs a lease this process does not hold.
    #[error("lease {0} is not held by this process")]
    NotHeld(String),
    #[error("column {index}: expected {want}, found {found}")]
    Column {
        index: usize,
        want: &'static str,
        found: String,
    },
}

impl DbError {
    /// Worth running the whole transaction again: PostgreSQL gave up on it (a deadlock between
    /// two processes, a serialization failure).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Postgres(m) if m.starts_with("40001") || m.starts_with("40P01"))
    }
}

/// A connection to a store. Statements use `?N` (or `?`, counted in order) placeholders.
pub trait Sql: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the number of rows it changed.
    fn exec(&self, q: &str, args: &[Val]) -> Result<u64, DbError>;
    /// Runs a query; every row of its answer.
    fn rows(&self, q: &str, args: &[Val]) -> Result<Vec<Row>, DbError>;
    /// Runs statements without arguments (migrations, transaction control).
    fn batch(&self, q: &str) -> Result<(), DbError>;

    /// The first row of a query's answer, if any.
    fn row(&self, q: &str, args: &[Val]) -> Result<Option<Row>, DbError> {
        Ok(self.rows(q, args)?.into_iter().next())
    }

    /// The integer in the first column of the first row (`COUNT(*)` and the like).
    fn one(&self, q: &str, args: &[Val]) -> Result<i64, DbError> {
        match self.row(q, args)? {
            Some(r) => r.int(0),
            None => Ok(0),
        }
    }
}

/// `?N` and `?` placeholders as PostgreSQL's `$N`; text in quotes is left alone.
pub fn dollar_placeholders(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 8);
    let mut next = 1;
    let mut quoted = false;
    let mut chars = q.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE a = ?1 AND b IN (?2, ?12) AND c = '?1'"),
            "SELECT a FROM t WHERE a = $1 AND b IN ($2, $12) AND c = '?1'"
        );
        assert_eq!(dollar_placeholders("x IN (?,?,?)"), "x IN ($1,$2,$3)");
    }

    #[test]
    fn rows_read_typed_and_say_what_they_found() {
        let r = Row(vec![Val::Int(3), Val::Null, Val::Text("ready".into())]);
        assert_eq!(r.int(0).unwrap(), 3);
        assert_eq!(r.opt_text(1).unwrap(), None);
        assert_eq!(r.status(2).unwrap(), LabelStatus::Ready);
        let e = r.text(0).unwrap_err().to_string();
        assert!(e.contains("column 0") && e.contains("text"), "{e}");
        assert!(r.int(7).is_err());
    }

    #[test]
    fn args_convert_options_and_statuses() {
        let none: Option<&str> = None;
        let a = args![
            1i64,
            "x",
            none,
            LabelStatus::Invalid,
            Some(String::from("y"))
        ];
        assert_eq!(
            a.to_vec(),
            vec![
                Val::Int(1),
                Val::Text("x".into()),
                Val::Null,
                Val::Text("invalid".into()),
                Val::Text("y".into())
            ]
        );
    }
}

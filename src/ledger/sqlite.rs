//! The embedded store: one SQLite file, one writer process (see `schema::acquire_lock`).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::db::{DbError, Dialect, Row, Sql, Val};

pub(super) struct Sqlite(pub Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Val::Int(n) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*n)),
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn val(v: ValueRef<'_>) -> rusqlite::Result<Val> {
    Ok(match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(n) => Val::Int(n),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            return Err(rusqlite::Error::InvalidColumnType(
                0,
                "a ledger column".into(),
                v.data_type(),
            ))
        }
    })
}

impl Sql for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&self, q: &str, args: &[Val]) -> Result<u64, DbError> {
        let mut st = self.0.prepare_cached(q)?;
        Ok(st.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn rows(&self, q: &str, args: &[Val]) -> Result<Vec<Row>, DbError> {
        let mut st = self.0.prepare_cached(q)?;
        let n = st.column_count();
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            (0..n)
                .map(|i| val(r.get_ref(i)?))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(Row)
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn batch(&self, q: &str) -> Result<(), DbError> {
        Ok(self.0.execute_batch(q)?)
    }
}

//! One SQLite value, owned ([`Cell`]), and its encodings in the three
//! export formats, each exact for every storage class and read back by
//! its decoder. The files these values go in are `export`'s.
//!
//! - **sql** ([`sql_literal`]): a value is a literal of its storage class:
//!   integers in decimal (`i64::MIN` as `(-9223372036854775807-1)`, which
//!   SQLite would otherwise read as a real), reals in Rust's shortest
//!   round-trip form (`0.1`, `1e-300`, `1.0`; infinities as
//!   `9e999`/`-9e999`), text quoted with `'` doubled (text that is not
//!   UTF-8 or holds NUL as `CAST(X'…' AS TEXT)`), blobs as `X'…'`, `NULL`.
//! - **json** ([`json_value`], [`json_cell`]): a value is `null`, an
//!   integer, a real (a JSON number that always has a `.` or an exponent;
//!   `{"real":"inf"}` and `{"real":"-inf"}`), a string, `{"blob_hex":"…"}`,
//!   or `{"text_hex":"…"}` for text that is not UTF-8.
//! - **csv** ([`csv_field`], [`csv_cell`]): a field is decoded on its own:
//!   empty is NULL; `\x` followed by hex is a blob; any other field
//!   starting with `\` is text, the rest after the `\`; a field Rust reads
//!   as an `i64` is an integer, else one it reads as an `f64` is a real
//!   (written in the shortest round-trip form, always with `.` or `e`, or
//!   `inf`); everything else is text as it stands. Text is written with a
//!   leading `\` exactly when it would otherwise read back as something
//!   else (empty, starting with `\`, or looking like a number: `\007`,
//!   `\1e5`).

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

use crate::error::Result;

/// One SQLite value, owned. Text is bytes: SQLite does not insist on valid
/// UTF-8 and neither do the encodings.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE 754 double.
    Real(f64),
    /// Text (normally UTF-8).
    Text(Vec<u8>),
    /// A blob.
    Blob(Vec<u8>),
}

impl Cell {
    /// An owned copy of a value SQLite returned.
    #[must_use]
    pub fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(t) => Self::Text(t.to_vec()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        }
    }

    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(t) => ValueRef::Text(t),
            Self::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

/// Rust's shortest representation that reads back as the same double
/// (`{:?}` always has a `.` or an exponent, so it never looks like an
/// integer).
fn real_text(f: f64) -> String {
    format!("{f:?}")
}

/// The SQL literal of a value (see the module doc).
#[must_use]
pub fn sql_literal(v: &Cell) -> String {
    match v {
        Cell::Null => "NULL".to_owned(),
        // SQLite reads `-9223372036854775808` as minus a too-large
        // integer, which becomes a real.
        Cell::Integer(i64::MIN) => "(-9223372036854775807-1)".to_owned(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(f) if f.is_nan() => "NULL".to_owned(),
        Cell::Real(f) if f.is_infinite() => if *f > 0.0 { "9e999" } else { "-9e999" }.to_owned(),
        Cell::Real(f) => real_text(*f),
        Cell::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains('\0') => format!("'{}'", s.replace('\'', "''")),
            _ => format!("CAST(X'{}' AS TEXT)", hex::encode_upper(t)),
        },
        Cell::Blob(b) => format!("X'{}'", hex::encode_upper(b)),
    }
}

/// The JSON form of a value (see the module doc).
#[must_use]
pub fn json_value(v: &Cell) -> serde_json::Value {
    use serde_json::{Value, json};
    match v {
        Cell::Null => Value::Null,
        Cell::Integer(i) => Value::from(*i),
        Cell::Real(f) if f.is_infinite() => {
            json!({"real": if *f > 0.0 { "inf" } else { "-inf" }})
        }
        // NaN cannot be stored in SQLite (it becomes NULL).
        Cell::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cell::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({"text_hex": hex::encode(t)}),
        },
        Cell::Blob(b) => json!({"blob_hex": hex::encode(b)}),
    }
}

/// Reads back a value [`json_value`] wrote. The error says what is wrong.
///
/// # Errors
/// A JSON value that is not one of the forms of the module doc.
pub fn json_cell(v: &serde_json::Value) -> Result<Cell, String> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(Cell::Null),
        Value::Bool(_) => Err("true/false is not a SQLite value".to_owned()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Cell::Integer(i))
            } else if n.is_u64() {
                Err(format!("integer {n} is larger than SQLite's largest"))
            } else {
                n.as_f64()
                    .map(Cell::Real)
                    .ok_or_else(|| format!("{n} is not a number SQLite can store"))
            }
        }
        Value::String(s) => Ok(Cell::Text(s.as_bytes().to_vec())),
        Value::Object(m) => {
            let mut entries = m.iter();
            let (Some((key, Value::String(s))), None) = (entries.next(), entries.next()) else {
                return Err(format!(
                    "{v} is not a value: an object must be {{\"blob_hex\": \"…\"}}, {{\"text_hex\": \"…\"}} or {{\"real\": \"…\"}}"
                ));
            };
            match key.as_str() {
                "blob_hex" => hex::decode(s)
                    .map(Cell::Blob)
                    .map_err(|e| format!("blob_hex {s:?}: {e}")),
                "text_hex" => hex::decode(s)
                    .map(Cell::Text)
                    .map_err(|e| format!("text_hex {s:?}: {e}")),
                "real" => s
                    .parse::<f64>()
                    .map(Cell::Real)
                    .map_err(|e| format!("real {s:?}: {e}")),
                other => Err(format!(
                    "unknown value form \"{other}\": expected blob_hex, text_hex or real"
                )),
            }
        }
        Value::Array(_) => Err(format!("{v} is not a value")),
    }
}

/// How a CSV field reads when it is not escaped: an integer, a real, or
/// text.
fn csv_plain(field: &[u8]) -> Cell {
    if let Ok(s) = std::str::from_utf8(field) {
        if let Ok(i) = s.parse::<i64>() {
            return Cell::Integer(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            return Cell::Real(f);
        }
    }
    Cell::Text(field.to_vec())
}

/// The CSV field of a value (see the module doc).
#[must_use]
pub fn csv_field(v: &Cell) -> Vec<u8> {
    match v {
        Cell::Null => Vec::new(),
        Cell::Integer(i) => i.to_string().into_bytes(),
        Cell::Real(f) if f.is_nan() => Vec::new(),
        Cell::Real(f) => real_text(*f).into_bytes(),
        Cell::Text(t) => {
            let plain_ok =
                !t.is_empty() && t.first() != Some(&b'\\') && matches!(csv_plain(t), Cell::Text(_));
            if plain_ok {
                t.clone()
            } else {
                let mut escaped = Vec::with_capacity(t.len() + 1);
                escaped.push(b'\\');
                escaped.extend_from_slice(t);
                escaped
            }
        }
        Cell::Blob(b) => {
            let mut f = b"\\x".to_vec();
            f.extend_from_slice(hex::encode(b).as_bytes());
            f
        }
    }
}

/// Reads back a CSV field [`csv_field`] wrote.
///
/// # Errors
/// A `\x` field whose rest is not hex.
pub fn csv_cell(field: &[u8]) -> Result<Cell, String> {
    match field {
        [] => Ok(Cell::Null),
        [b'\\', b'x', hexits @ ..] => hex::decode(hexits)
            .map(Cell::Blob)
            .map_err(|e| format!("{:?} is not a blob: {e}", String::from_utf8_lossy(field))),
        [b'\\', rest @ ..] => Ok(Cell::Text(rest.to_vec())),
        _ => Ok(csv_plain(field)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::Connection;

    fn cell() -> impl Strategy<Value = Cell> {
        prop_oneof![
            Just(Cell::Null),
            any::<i64>().prop_map(Cell::Integer),
            any::<f64>()
                .prop_filter("SQLite stores no NaN", |f| !f.is_nan())
                .prop_map(Cell::Real),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Cell::Text),
            ".{0,12}".prop_map(|s: String| Cell::Text(s.into_bytes())),
            "[-+0-9.eE\\\\x ]{0,8}".prop_map(|s: String| Cell::Text(s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Cell::Blob),
        ]
    }

    /// Equality that tells reals by their bits (so -0.0 from 0.0).
    fn same(a: &Cell, b: &Cell) -> bool {
        match (a, b) {
            (Cell::Real(x), Cell::Real(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn dbexport_csv_fields_round_trip(v in cell()) {
            let back = csv_cell(&csv_field(&v)).expect("decodes");
            prop_assert!(same(&back, &v), "{v:?} came back as {back:?}");
        }

        #[test]
        fn dbexport_json_values_round_trip(v in cell()) {
            let text = serde_json::to_string(&json_value(&v)).expect("json");
            let parsed: serde_json::Value = serde_json::from_str(&text).expect("parse");
            let back = json_cell(&parsed).expect("decodes");
            prop_assert!(same(&back, &v), "{v:?} came back as {back:?} via {text}");
        }

        #[test]
        fn dbexport_sql_literals_round_trip(v in cell()) {
            let conn = Connection::open_in_memory().expect("db");
            let back: Cell = conn
                .query_row(&format!("SELECT {}", sql_literal(&v)), [], |r| {
                    Ok(Cell::from_ref(r.get_ref(0)?))
                })
                .expect("select");
            // SQLite may not keep the sign of a zero.
            let zeros = matches!((&back, &v), (Cell::Real(0.0), Cell::Real(0.0)));
            prop_assert!(zeros || same(&back, &v), "{v:?} came back as {back:?}");
        }

        #[test]
        fn dbexport_decoders_never_panic(field in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = csv_cell(&field);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&field) {
                let _ = json_cell(&v);
            }
        }
    }

    #[test]
    fn dbexport_csv_escapes_text_that_would_read_as_something_else() {
        assert_eq!(csv_field(&Cell::Text(b"007".to_vec())), b"\\007");
        assert_eq!(csv_field(&Cell::Text(Vec::new())), b"\\");
        assert_eq!(csv_field(&Cell::Text(b"\\x00".to_vec())), b"\\\\x00");
        assert_eq!(csv_field(&Cell::Text(b"inf".to_vec())), b"\\inf");
        assert_eq!(csv_field(&Cell::Text(b"hello".to_vec())), b"hello");
        assert_eq!(csv_field(&Cell::Real(1.0)), b"1.0");
        assert_eq!(csv_field(&Cell::Blob(vec![0, 255])), b"\\x00ff");
        assert_eq!(csv_field(&Cell::Null), b"");
    }
}

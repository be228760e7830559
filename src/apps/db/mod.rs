//! Logical export, import and table-level restore of SQLite databases,
//! above all of the database images that backup captured
//! (src/apps/sqlite/mod.rs).
//!
//! One file per job:
//! - `cells`: one SQLite value ([`cells::Cell`]) and its encodings in the
//!   export formats (SQL literal, JSON value, CSV field), each exact for
//!   every storage class;
//! - `schema`: what a database holds, as the other files read it: tables
//!   and columns, foreign key order, indexes, triggers and views, row
//!   counts and AUTOINCREMENT counters, and the SQL helpers they share;
//! - `export`: export of a database file as an SQL script, one JSON
//!   document or CSV files, and the layout of those files;
//! - `image`: a snapshot's database image written out to a temporary file;
//! - `import`: an export (SQL, JSON or CSV) loaded into a scratch database;
//! - `restore`: restore of tables from a snapshot's database image or an
//!   export into another database, in one transaction, with the
//!   protections of a restore into a live database.
//!
//! `cells` and `schema` serve the others; `import` reads what `export`
//! writes; `restore` restores from what `image` and `import` produce.
//! lib.rs re-exports the public names from the files themselves.
//!
//! May use: `ops/`, `repo/`, `format/`, `storage/` and the base modules;
//! not `daemon/` or `server/`, which call into it.

pub mod cells;
pub mod export;
pub mod image;
mod import;
pub mod restore;
pub mod schema;

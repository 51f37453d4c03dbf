//! `type: postgres`: results as rows of a PostgreSQL table, exactly once with checkpoints.
//!
//! Rows go in batches, as one statement over arrays (`INSERT ... SELECT ... FROM unnest($1,
//! $2, ...)`), one typed array per column. `mode: upsert` replaces the row of the same `key`
//! (`ON CONFLICT (key) DO UPDATE`), the last of a batch winning, so a window's update
//! (`is_update`) replaces its earlier result.
//!
//! **Exactly once** (a run with checkpoints): what is written between two barriers is staged
//! durably in `<table>_dataflow_staging`, tagged with the sink's `id` and the checkpoint that
//! covers it; once checkpoint `n` is saved, one transaction moves the staged rows of every
//! checkpoint up to `n` into the table and records `n` in `dataflow_sink_progress`. A restart
//! from checkpoint `c` first moves what `c` covers and was not moved yet, and deletes the rest
//! (it will be written again). What follows the last checkpoint is moved when the run ends, with
//! its number of rows recorded beside the checkpoint, so that a restart from that checkpoint
//! (after a crash in the last instants of a run) skips the rows it finds already written in
//! `insert` mode (in `upsert` mode writing them again changes nothing).
//!
//! **At least once** (no checkpoints): batches go straight into the table.
//!
//! A store that is down, or that refuses for a transient reason, is retried with backoff (the
//! sink waits, and backpressure reaches the sources) for up to `retry_timeout`; then the run
//! fails with the store's message.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use dataflow_event::FieldType;
use dataflow_event::{Event, Layout, Value};
use dataflow_metrics::StoreRetries;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::config::{Place, Problem, SettingValue, Settings};
use crate::registry::SinkKind;
use crate::retry::{Attempt, Retry, DEFAULT_RETRY_TIMEOUT};
use crate::sink::{ResultFormat, Sink};
use crate::{ConnectorError, Result};

/// How rows meet the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every result is a new row.
    Insert,
    /// A result replaces the row with the same key (`ON CONFLICT (key) DO UPDATE`).
    Upsert,
}

/// A table, maybe in a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The schema; `None` is the connection's search path (`public`).
    pub schema: Option<String>,
    /// The table's name.
    pub name: String,
}

impl Table {
    fn quoted(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(name)),
            None => quote(name),
        }
    }

    /// The table, quoted for SQL.
    fn sql(&self) -> String {
        self.quoted(&self.name)
    }

    /// Its staging table.
    fn staging(&self) -> String {
        self.quoted(&format!("{}_dataflow_staging", self.name))
    }

    /// The progress table beside it.
    fn progress(&self) -> String {
        self.quoted(PROGRESS_TABLE)
    }

    /// As written in the config.
    fn shown(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

const PROGRESS_TABLE: &str = "dataflow_sink_progress";

/// `type: postgres` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// How to connect, as a libpq connection string (URL or `key=value` pairs).
    pub connection: String,
    /// The table written.
    pub table: Table,
    /// Column ← result field, in order; empty: every field of the results, by its name.
    pub columns: Vec<(String, String)>,
    /// Where `columns` was written (or the sink, without it).
    pub columns_place: Place,
    /// Insert or upsert.
    pub mode: Mode,
    /// The conflict key of an upsert (columns).
    pub key: Vec<String>,
    /// Where `key` was written.
    pub key_place: Place,
    /// Create the table (from the results' layout) when it does not exist.
    pub create_table: bool,
    /// Rows per statement.
    pub batch_size: usize,
    /// How long the store may fail before the run does.
    pub retry_timeout: Duration,
    /// The sink's name in the staging and progress tables (default: the table).
    pub id: String,
}

impl std::fmt::Debug for PostgresSettings {
    // The connection string may hold a password: not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("mode", &self.mode)
            .field("key", &self.key)
            .field("create_table", &self.create_table)
            .field("batch_size", &self.batch_size)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// `"name"`, with inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `name` is a plain SQL identifier: what this sink accepts for tables and columns.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &[
    "url",
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "table",
    "columns",
    "mode",
    "key",
    "create_table",
    "batch_size",
    "retry_timeout",
    "id",
];

/// Reads a list of names (`[a, b]`, or one name), reporting problems at its place.
fn names(settings: &mut Settings<'_>, key: &str) -> Option<(Vec<String>, Place)> {
    let setting = settings.take(key)?;
    let items = match &setting.value {
        SettingValue::Str(one) => Some(vec![one.clone()]),
        SettingValue::Seq(items) => items
            .iter()
            .map(|item| match item {
                SettingValue::Str(name) => Some(name.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match items {
        Some(items) => Some((items, setting.place)),
        None => {
            settings.problem(
                setting.place,
                format!("`{key}` must be a column name or a sequence of column names"),
            );
            None
        }
    }
}

/// Whether a mapping or sequence holds a boolean.
fn has_bool(value: &SettingValue) -> bool {
    match value {
        SettingValue::Map(entries) => entries
            .iter()
            .any(|(_, v)| matches!(v, SettingValue::Bool(_))),
        SettingValue::Seq(items) => items.iter().any(|v| matches!(v, SettingValue::Bool(_))),
        _ => false,
    }
}

/// `type: postgres` settings: the connection, `table`, `columns`, `mode`, `key`,
/// `create_table`, `batch_size`, `retry_timeout` and `id`.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SinkKind> {
    let sink_place = settings.place();
    let mut ok = true;
    // The connection: a URL, or its parts.
    let url = settings.string("url");
    let mut parts = Vec::new();
    for key in ["host", "user", "password", "dbname"] {
        if let Some((value, place)) = settings.string(key) {
            parts.push((key, value, place));
        }
    }
    if let Some((port, place)) = settings.u64("port") {
        parts.push(("port", port.to_string(), place));
    }
    let connection = match (url, parts.is_empty()) {
        (Some((_, place)), false) => {
            settings.problem(
                place,
                "give either `url` or its parts (`host`, `port`, `user`, `password`, `dbname`), not both",
            );
            None
        }
        (Some((url, place)), true) => Some((url, place)),
        (None, _) => {
            let text: Vec<String> = parts
                .iter()
                .map(|(key, value, _)| {
                    format!(
                        "{key}='{}'",
                        value.replace('\\', "\\\\").replace('\'', "\\'")
                    )
                })
                .collect();
            let place = parts
                .first()
                .map(|(_, _, place)| place.clone())
                .unwrap_or_else(|| sink_place.clone());
            Some((text.join(" "), place))
        }
    };
    if let Some((text, place)) = &connection {
        if let Err(error) = tokio_postgres::Config::from_str(text) {
            settings.problem(
                place.clone(),
                format!("invalid postgres connection: {error}"),
            );
            ok = false;
        }
    }
    let table = match settings.string("table") {
        Some((written, place)) => {
            let (schema, name) = match written.split_once('.') {
                Some((schema, name)) => (Some(schema.to_string()), name.to_string()),
                None => (None, written.clone()),
            };
            let valid = schema.as_deref().is_none_or(is_identifier)
                && is_identifier(&name)
                && name.len() + "_dataflow_staging".len() <= 63;
            if !valid {
                settings.problem(
                    place,
                    format!("invalid table `{written}`: write `name` or `schema.name`, letters, digits and `_`, the name at most 46 characters"),
                );
                ok = false;
            }
            Some(Table { schema, name })
        }
        None => {
            settings.problem(sink_place.clone(), "a postgres sink needs `table`");
            None
        }
    };
    let (columns, columns_place) = match settings.take("columns") {
        None => (Vec::new(), sink_place.clone()),
        Some(setting) => {
            let columns: Option<Vec<(String, String)>> = match &setting.value {
                SettingValue::Map(entries) => entries
                    .iter()
                    .map(|(column, field)| match field {
                        SettingValue::Str(field) => Some((column.clone(), field.clone())),
                        _ => None,
                    })
                    .collect(),
                SettingValue::Seq(items) => items
                    .iter()
                    .map(|item| match item {
                        SettingValue::Str(name) => Some((name.clone(), name.clone())),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            match columns {
                Some(columns) if !columns.is_empty() => {
                    for (column, _) in &columns {
                        if !is_identifier(column) {
                            settings.problem(
                                setting.place.clone(),
                                format!("invalid column `{column}`: letters, digits and `_`"),
                            );
                            ok = false;
                        }
                    }
                    (columns, setting.place)
                }
                _ => {
                    // YAML reads a bare `n`, `y`, `no`, `off`... as a boolean.
                    let hint = if has_bool(&setting.value) {
                        " (quote field names that YAML reads as booleans: `\"n\"`)"
                    } else {
                        ""
                    };
                    settings.problem(
                        setting.place.clone(),
                        format!("`columns` must map columns to result fields (`{{ column: field }}`) or list fields{hint}"),
                    );
                    ok = false;
                    (Vec::new(), setting.place)
                }
            }
        }
    };
    let mode = match settings.string("mode") {
        None => Mode::Insert,
        Some((text, place)) => match text.as_str() {
            "insert" => Mode::Insert,
            "upsert" => Mode::Upsert,
            other => {
                settings.problem(
                    place,
                    format!("unknown mode `{other}`: expected insert or upsert"),
                );
                ok = false;
                Mode::Insert
            }
        },
    };
    let (key, key_place) = names(settings, "key").unwrap_or((Vec::new(), sink_place.clone()));
    if mode == Mode::Upsert && key.is_empty() {
        settings.problem(
            sink_place.clone(),
            "mode upsert needs `key`: the columns a row is replaced on",
        );
        ok = false;
    }
    if mode == Mode::Insert && !key.is_empty() {
        settings.problem(key_place.clone(), "`key` applies to mode upsert only");
        ok = false;
    }
    let create_table = settings.bool("create_table").unwrap_or(false);
    let batch_size = match settings.u64("batch_size") {
        None => 1000,
        Some((0, place)) => {
            settings.problem(place, "`batch_size` must be at least 1");
            ok = false;
            1
        }
        Some((n, _)) => n.min(1 << 20) as usize,
    };
    let retry_timeout = settings
        .duration("retry_timeout")
        .map(|millis| Duration::from_millis(millis as u64))
        .unwrap_or(DEFAULT_RETRY_TIMEOUT);
    let id = settings.string("id").map(|(id, _)| id);
    let (connection, table) = (connection?, table?);
    if !ok {
        return None;
    }
    let id = id.unwrap_or_else(|| table.shown());
    Some(SinkKind::Postgres(Box::new(PostgresSettings {
        connection: connection.0,
        table,
        columns,
        columns_place,
        mode,
        key,
        key_place,
        create_table,
        batch_size,
        retry_timeout,
        id,
    })))
}

/// One column written: its name, the result field it takes, and that field's type.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    field: usize,
    ty: FieldType,
    nullable: bool,
}

/// The columns of `settings` for results of `layout`, or the problems of the mapping: a field
/// the results do not have, a key that is not a column, results of no known layout.
fn columns_for(
    settings: &PostgresSettings,
    layout: &Layout,
    place: &Place,
) -> std::result::Result<Vec<Column>, Vec<Problem>> {
    let Some(schema) = layout.schema() else {
        return Err(vec![Problem {
            place: place.clone(),
            message: "a postgres sink needs results of a known layout (a source schema, a map or window results), to type its columns".into(),
        }]);
    };
    let mapping: Vec<(String, String)> = if settings.columns.is_empty() {
        schema
            .fields()
            .iter()
            .map(|f| (f.name.clone(), f.name.clone()))
            .collect()
    } else {
        settings.columns.clone()
    };
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    for (name, field) in &mapping {
        match schema
            .index_of(field)
            .and_then(|i| Some((i, schema.field(i)?)))
        {
            Some((index, f)) => columns.push(Column {
                name: name.clone(),
                field: index,
                ty: f.ty,
                nullable: f.nullable,
            }),
            None => {
                let known: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
                problems.push(Problem {
                    place: Place {
                        path: format!("{}.{name}", settings.columns_place.path),
                        ..settings.columns_place.clone()
                    },
                    message: format!(
                        "column `{name}` takes field `{field}`, which the results do not have (they have {})",
                        known.join(", ")
                    ),
                });
            }
        }
    }
    for key in &settings.key {
        if !mapping.iter().any(|(name, _)| name == key) {
            problems.push(Problem {
                place: settings.key_place.clone(),
                message: format!("key `{key}` is not one of the columns written"),
            });
        }
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(problems)
    }
}

/// The static checks of a postgres sink against the layout of its results.
pub(crate) fn check_layout(settings: &PostgresSettings, layout: &Layout) -> Vec<Problem> {
    columns_for(settings, layout, &settings.columns_place)
        .err()
        .unwrap_or_default()
}

/// The array type a column's values are sent in, and the SQL type a created table gives it.
fn sql_types(ty: FieldType) -> (&'static str, &'static str) {
    match ty {
        FieldType::Bool => ("boolean[]", "boolean"),
        FieldType::Int => ("bigint[]", "bigint"),
        FieldType::Float => ("double precision[]", "double precision"),
        FieldType::String => ("text[]", "text"),
        FieldType::Timestamp => ("bigint[]", "timestamptz"),
        FieldType::Json => ("text[]", "jsonb"),
    }
}

/// One column's values of a batch, typed as they are sent.
#[derive(Debug)]
enum Values {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

impl Values {
    fn new(ty: FieldType) -> Values {
        match ty {
            FieldType::Bool => Values::Bool(Vec::new()),
            FieldType::Int | FieldType::Timestamp => Values::Int(Vec::new()),
            FieldType::Float => Values::Float(Vec::new()),
            FieldType::String | FieldType::Json => Values::Text(Vec::new()),
        }
    }

    fn push(&mut self, value: Option<&Value>, json: bool) {
        let value = value.filter(|v| !matches!(v, Value::Null));
        match self {
            Values::Bool(values) => values.push(match value {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            }),
            Values::Int(values) => values.push(match value {
                Some(Value::Int(i)) => Some(*i),
                _ => None,
            }),
            Values::Float(values) => values.push(match value {
                Some(Value::Float(f)) => Some(*f),
                Some(Value::Int(i)) => Some(*i as f64),
                _ => None,
            }),
            Values::Text(values) => values.push(match value {
                Some(Value::Str(text)) if !json => Some(text.to_string()),
                Some(other) => {
                    let mut out = Vec::new();
                    dataflow_event::json::write_value(&mut out, other);
                    Some(String::from_utf8_lossy(&out).into_owned())
                }
                None => None,
            }),
        }
    }

    fn clear(&mut self) {
        match self {
            Values::Bool(v) => v.clear(),
            Values::Int(v) => v.clear(),
            Values::Float(v) => v.clear(),
            Values::Text(v) => v.clear(),
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Values::Bool(v) => v,
            Values::Int(v) => v,
            Values::Float(v) => v,
            Values::Text(v) => v,
        }
    }
}

/// Records in the progress table that sink `id` has its rows up to checkpoint `progress.0` in
/// the table, and `progress.1` rows after it, then commits `transaction` (what `doing` names).
async fn record_progress(
    transaction: tokio_postgres::Transaction<'_>,
    table: &Table,
    id: &str,
    (checkpoint, tail): (i64, i64),
    doing: &str,
) -> std::result::Result<(), Attempt> {
    transaction
        .execute(
            &format!(
                "UPDATE {} SET checkpoint_id = $2, tail_rows = $3 WHERE sink = $1",
                table.progress()
            ),
            &[&id, &checkpoint, &tail],
        )
        .await
        .map_err(|e| attempt(e, doing))?;
    transaction.commit().await.map_err(|e| attempt(e, doing))
}

/// Whether an error of the store passes (the store is down, restarting, or asks for a retry).
fn attempt(error: tokio_postgres::Error, doing: &str) -> Attempt {
    let message = store_message(&error);
    let transient = match error.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
                || code == "53300"
        }
        // No SQLSTATE: the connection broke or could not be made.
        None => true,
    };
    if transient {
        Attempt::Transient(format!("{doing}: {message}"))
    } else {
        Attempt::Fatal(ConnectorError::Runtime(format!("{doing}: {message}")))
    }
}

/// The store's own message for `error`, with its detail and hint when it gives them, and the
/// cause of a connection error.
fn store_message(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!(" (hint: {hint})"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A live connection and its prepared statements.
struct Connection {
    client: Client,
    /// The batch insert: into the staging table (exactly once) or the table (at least once).
    insert: Statement,
}

/// Writes results into a PostgreSQL table (see the module's documentation).
pub struct PostgresSink {
    settings: PostgresSettings,
    what: String,
    columns: Vec<Column>,
    exactly_once: bool,
    connection: Option<Connection>,
    insert_sql: String,
    /// The move of staged rows of checkpoints up to `$2` into the table.
    move_sql: String,
    /// This batch's values, one per column.
    values: Vec<Values>,
    rows: usize,
    /// Rows staged by this run so far: the next row's sequence number in the staging table.
    staged_seq: i64,
    /// Rows staged, by the checkpoint that covers them, not yet moved.
    staged: BTreeMap<u64, u64>,
    last_prepared: u64,
    /// The newest checkpoint whose rows are in the table, and the rows after it there.
    committed: u64,
    committed_tail: u64,
    /// Rows still to skip: already in the table, written again by the replay (insert mode).
    skip: u64,
    /// `skip` as it was at each prepared checkpoint's barrier.
    skip_at: BTreeMap<u64, u64>,
    retries: StoreRetries,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("table", &self.settings.table)
            .field("exactly_once", &self.exactly_once)
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    /// Connects (waiting for the store up to `retry_timeout`), checks or creates the table,
    /// prepares the statements (the store refuses a column that does not exist or a type that
    /// does not fit, in its own words) and, with checkpoints, recovers to `restored`.
    pub async fn open(
        settings: &PostgresSettings,
        format: ResultFormat,
        restored: Option<u64>,
    ) -> Result<PostgresSink> {
        let columns =
            columns_for(settings, &format.layout, &settings.columns_place).map_err(|problems| {
                ConnectorError::Runtime(
                    problems
                        .iter()
                        .map(|p| p.message.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        let table = &settings.table;
        let what = format!("postgres table {}", table.shown());
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let mut sink = PostgresSink {
            settings: settings.clone(),
            what,
            values: columns.iter().map(|c| Values::new(c.ty)).collect(),
            columns,
            exactly_once: format.checkpoints,
            connection: None,
            insert_sql: String::new(),
            move_sql: String::new(),
            rows: 0,
            staged_seq: 0,
            staged: BTreeMap::new(),
            last_prepared: restored.unwrap_or(0),
            committed: restored.unwrap_or(0),
            committed_tail: 0,
            skip: 0,
            skip_at: BTreeMap::new(),
            retries: StoreRetries::default(),
        };
        // The table's columns and their types, creating it first if asked.
        let mut retry = sink.retry();
        let types = loop {
            match sink.prepare_table().await {
                Ok(types) => break types,
                Err(failure) => {
                    sink.connection = None;
                    retry.failed(failure).await?
                }
            }
        };
        let exprs = sink.value_exprs(&types);
        let upsert = sink.on_conflict();
        let distinct = sink.distinct("u.", "u.ord DESC");
        let arrays: Vec<String> = sink
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 4, sql_types(c.ty).0))
            .collect();
        let aliases: Vec<String> = (0..sink.columns.len()).map(|i| format!("c{i}")).collect();
        let list = names.join(", ");
        sink.insert_sql = if sink.exactly_once {
            format!(
                "INSERT INTO {} (dataflow_sink, dataflow_checkpoint, dataflow_seq, {list}) SELECT $1, $2, $3 + u.ord, {} FROM unnest({}) WITH ORDINALITY AS u({}, ord) ON CONFLICT (dataflow_sink, dataflow_seq) DO NOTHING",
                table.staging(),
                exprs.join(", "),
                arrays.join(", "),
                aliases.join(", ")
            )
        } else {
            // The same parameters, $1 to $3 unused but typed, so both statements bind alike.
            format!(
                "INSERT INTO {} ({list}) SELECT {}{} FROM unnest({}) WITH ORDINALITY AS u({}, ord) WHERE $1::text IS NOT NULL AND $2::bigint IS NOT NULL AND $3::bigint IS NOT NULL{}{upsert}",
                table.sql(),
                distinct.0,
                exprs.join(", "),
                arrays.join(", "),
                aliases.join(", "),
                distinct.1
            )
        };
        let staged_distinct = sink.distinct("", "dataflow_checkpoint DESC, dataflow_seq DESC");
        sink.move_sql = format!(
            "INSERT INTO {} ({list}) SELECT {}{list} FROM {} WHERE dataflow_sink = $1 AND dataflow_checkpoint <= $2{}{upsert}",
            table.sql(),
            staged_distinct.0,
            table.staging(),
            if staged_distinct.1.is_empty() {
                " ORDER BY dataflow_checkpoint, dataflow_seq".to_string()
            } else {
                staged_distinct.1
            },
        );
        let mut retry = sink.retry();
        loop {
            match sink.connect().await {
                Ok(()) => break,
                Err(failure) => retry.failed(failure).await?,
            }
        }
        if sink.exactly_once {
            let mut retry = sink.retry();
            loop {
                match sink.recover(restored.unwrap_or(0)).await {
                    Ok(()) => break,
                    Err(failure) => {
                        sink.connection = None;
                        retry.failed(failure).await?
                    }
                }
            }
        }
        Ok(sink)
    }

    fn retry(&self) -> Retry {
        Retry::new(
            self.what.clone(),
            self.settings.retry_timeout,
            self.retries.clone(),
        )
    }

    /// `(DISTINCT ON (keys) , ORDER BY keys, then)` for an upsert, naming the key columns
    /// with `prefix` (the key columns' aliases in an unnest); empty for an insert.
    fn distinct(&self, prefix: &str, then: &str) -> (String, String) {
        if self.settings.mode == Mode::Insert {
            return (String::new(), String::new());
        }
        let keys: Vec<String> = self
            .settings
            .key
            .iter()
            .map(|key| {
                if prefix.is_empty() {
                    quote(key)
                } else {
                    let index = self
                        .columns
                        .iter()
                        .position(|c| &c.name == key)
                        .unwrap_or(0);
                    format!("{prefix}c{index}")
                }
            })
            .collect();
        let keys = keys.join(", ");
        (
            format!("DISTINCT ON ({keys}) "),
            format!(" ORDER BY {keys}, {then}"),
        )
    }

    /// `ON CONFLICT (key) DO UPDATE SET ...` for an upsert; empty for an insert.
    fn on_conflict(&self) -> String {
        if self.settings.mode == Mode::Insert {
            return String::new();
        }
        let keys: Vec<String> = self.settings.key.iter().map(|k| quote(k)).collect();
        let updates: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.settings.key.contains(&c.name))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
            .collect();
        if updates.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                keys.join(", "),
                updates.join(", ")
            )
        }
    }

    /// The SQL of each column's value from its array element `u.c<i>`, given the table's
    /// column types: timestamps become `timestamptz` for a time column, JSON `jsonb` for a JSON
    /// column; anything else is the array's type, for the store to accept or refuse.
    fn value_exprs(&self, types: &BTreeMap<String, String>) -> Vec<String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let target = types.get(&column.name).map(String::as_str).unwrap_or("");
                let is_time = target.starts_with("timestamp") || target == "date";
                let is_json = target == "json" || target == "jsonb";
                match column.ty {
                    FieldType::Timestamp if is_time => {
                        format!("timestamptz 'epoch' + u.c{i} * interval '1 millisecond'")
                    }
                    FieldType::Json if is_json => format!("u.c{i}::jsonb"),
                    _ => format!("u.c{i}"),
                }
            })
            .collect()
    }

    /// Opens a connection if there is none.
    async fn client(&mut self) -> std::result::Result<&mut Connection, Attempt> {
        if self.connection.is_none() {
            self.connect().await?;
        }
        match &mut self.connection {
            Some(connection) => Ok(connection),
            None => Err(Attempt::Transient("no connection".into())),
        }
    }

    /// Connects, in UTC, with the insert statement prepared (once it is known).
    async fn connect(&mut self) -> std::result::Result<(), Attempt> {
        let (client, connection) = tokio_postgres::connect(&self.settings.connection, NoTls)
            .await
            .map_err(|e| attempt(e, "cannot connect"))?;
        let what = self.what.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(sink = %what, %error, "postgres connection ended");
            }
        });
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .await
            .map_err(|e| attempt(e, "cannot set the time zone"))?;
        let insert = if self.insert_sql.is_empty() {
            // Only while the table is being checked: no statement yet.
            client
                .prepare("SELECT 1")
                .await
                .map_err(|e| attempt(e, "cannot prepare"))?
        } else {
            client
                .prepare(&self.insert_sql)
                .await
                .map_err(|e| attempt(e, "refused the sink's insert"))?
        };
        self.connection = Some(Connection { client, insert });
        Ok(())
    }

    /// Checks that the table exists (creating it when asked) and has every column written;
    /// with checkpoints, creates the staging and progress tables. Returns the table's column
    /// types.
    async fn prepare_table(&mut self) -> std::result::Result<BTreeMap<String, String>, Attempt> {
        let table = self.settings.table.clone();
        let create = self.settings.create_table;
        let exactly_once = self.exactly_once;
        let create_sql = self.create_sql();
        let columns = self.columns.clone();
        let client = &self.client().await?.client;
        let columns_sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
        let read = |rows: Vec<tokio_postgres::Row>| -> BTreeMap<String, String> {
            rows.iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
                .collect()
        };
        let mut types = read(
            client
                .query(columns_sql, &[&table.sql()])
                .await
                .map_err(|e| attempt(e, "cannot read the table's columns"))?,
        );
        if types.is_empty() {
            if !create {
                return Err(Attempt::Fatal(ConnectorError::Runtime(format!(
                    "table {} does not exist (set `create_table: true` to create it from the results' layout)",
                    table.shown()
                ))));
            }
            client
                .batch_execute(&create_sql)
                .await
                .map_err(|e| attempt(e, &format!("cannot create table {}", table.shown())))?;
            tracing::info!(table = %table.shown(), "created table");
            types = read(
                client
                    .query(columns_sql, &[&table.sql()])
                    .await
                    .map_err(|e| attempt(e, "cannot read the table's columns"))?,
            );
        }
        let missing: Vec<&str> = columns
            .iter()
            .filter(|c| !types.contains_key(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !missing.is_empty() {
            let have: Vec<&str> = types.keys().map(String::as_str).collect();
            return Err(Attempt::Fatal(ConnectorError::Runtime(format!(
                "table {} has no column {} (it has {})",
                table.shown(),
                missing.join(", "),
                have.join(", ")
            ))));
        }
        if exactly_once {
            let staged_columns: Vec<String> = columns
                .iter()
                .map(|c| format!("{} {}", quote(&c.name), types[&c.name]))
                .collect();
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (dataflow_sink text NOT NULL, dataflow_checkpoint bigint NOT NULL, dataflow_seq bigint NOT NULL, {}, PRIMARY KEY (dataflow_sink, dataflow_seq)); CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, checkpoint_id bigint NOT NULL, tail_rows bigint NOT NULL DEFAULT 0)",
                table.staging(),
                staged_columns.join(", "),
                table.progress()
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| attempt(e, "cannot create the staging and progress tables"))?;
        }
        Ok(types)
    }

    /// `CREATE TABLE`, the columns typed by the results' fields, the key as primary key.
    fn create_sql(&self) -> String {
        let mut defs: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let not_null = if c.nullable { "" } else { " NOT NULL" };
                format!("{} {}{not_null}", quote(&c.name), sql_types(c.ty).1)
            })
            .collect();
        if !self.settings.key.is_empty() {
            let keys: Vec<String> = self.settings.key.iter().map(|k| quote(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.settings.table.sql(),
            defs.join(", ")
        )
    }

    /// Recovers to checkpoint `restored` (0: the start) in one transaction: moves the staged
    /// rows it covers that were not moved yet, deletes the others, and learns how many rows
    /// after it the table already holds.
    async fn recover(&mut self, restored: u64) -> std::result::Result<(), Attempt> {
        let table = self.settings.table.clone();
        let id = self.settings.id.clone();
        let mode = self.settings.mode;
        let move_sql = self.move_sql.clone();
        let connection = self.client().await?;
        let transaction = connection
            .client
            .transaction()
            .await
            .map_err(|e| attempt(e, "cannot begin the recovery"))?;
        let failed = |e| attempt(e, "cannot recover the sink's staged rows");
        transaction
            .execute(
                &format!(
                    "INSERT INTO {} (sink, checkpoint_id, tail_rows) VALUES ($1, 0, 0) ON CONFLICT (sink) DO NOTHING",
                    table.progress()
                ),
                &[&id],
            )
            .await
            .map_err(failed)?;
        let row = transaction
            .query_one(
                &format!(
                    "SELECT checkpoint_id, tail_rows FROM {} WHERE sink = $1 FOR UPDATE",
                    table.progress()
                ),
                &[&id],
            )
            .await
            .map_err(failed)?;
        let (progress, tail) = (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
        let restored_sql = restored as i64;
        let mut skip = 0;
        if progress < restored {
            let moved = transaction
                .execute(&move_sql, &[&id, &restored_sql])
                .await
                .map_err(failed)?;
            if moved > 0 {
                tracing::info!(table = %table.shown(), rows = moved, checkpoint = restored, "committed the rows staged for the restored checkpoint");
            }
        } else if progress == restored {
            if mode == Mode::Insert {
                skip = tail;
            }
        } else if mode == Mode::Insert {
            return Err(Attempt::Fatal(ConnectorError::Runtime(format!(
                "table {} already holds the rows of sink `{id}` up to checkpoint {progress}, and the run starts from {}: they would be written twice (delete them, and the sink's row in {PROGRESS_TABLE}, to write them again)",
                table.shown(),
                if restored == 0 { "the beginning".to_string() } else { format!("checkpoint {restored}") },
            ))));
        } else {
            tracing::warn!(table = %table.shown(), progress, restored, "the table holds rows of later checkpoints: upserting them again");
        }
        transaction
            .execute(
                &format!("DELETE FROM {} WHERE dataflow_sink = $1", table.staging()),
                &[&id],
            )
            .await
            .map_err(failed)?;
        record_progress(
            transaction,
            &table,
            &id,
            (restored_sql, skip as i64),
            "cannot commit the recovery",
        )
        .await?;
        if skip > 0 {
            tracing::info!(table = %table.shown(), rows = skip, "rows after the restored checkpoint are already in the table: skipping them");
        }
        self.skip = skip;
        self.committed = restored;
        self.committed_tail = skip;
        Ok(())
    }

    /// Sends the batch: staged under the checkpoint that will cover it, or into the table.
    async fn send_batch(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let epoch = self.last_prepared + 1;
        let mut retry = self.retry();
        loop {
            match self.try_send(epoch).await {
                Ok(()) => break,
                Err(failure) => {
                    if matches!(failure, Attempt::Transient(_)) {
                        self.connection = None;
                    }
                    retry.failed(failure).await?
                }
            }
        }
        retry.succeeded();
        if self.exactly_once {
            *self.staged.entry(epoch).or_default() += self.rows as u64;
            self.staged_seq += self.rows as i64;
        }
        for values in &mut self.values {
            values.clear();
        }
        self.rows = 0;
        Ok(())
    }

    async fn try_send(&mut self, epoch: u64) -> std::result::Result<(), Attempt> {
        let id = self.settings.id.clone();
        let epoch = epoch as i64;
        let seq = self.staged_seq;
        if self.connection.is_none() {
            self.connect().await?;
        }
        let Some(connection) = &self.connection else {
            return Err(Attempt::Transient("no connection".into()));
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id, &epoch, &seq];
        params.extend(self.values.iter().map(Values::param));
        connection
            .client
            .execute(&connection.insert, &params)
            .await
            .map_err(|e| attempt(e, "cannot write rows"))?;
        Ok(())
    }

    /// Moves the staged rows of checkpoints up to `upto` into the table and records the
    /// progress, in one transaction (idempotent: a retry after a lost reply moves nothing).
    async fn try_move(
        &mut self,
        upto: u64,
        progress: u64,
        tail: u64,
    ) -> std::result::Result<u64, Attempt> {
        let id = self.settings.id.clone();
        let table = self.settings.table.clone();
        let move_sql = self.move_sql.clone();
        let connection = self.client().await?;
        let transaction = connection
            .client
            .transaction()
            .await
            .map_err(|e| attempt(e, "cannot begin a commit"))?;
        let failed = |e| attempt(e, "cannot commit rows");
        let (upto, progress, tail) = (upto as i64, progress as i64, tail as i64);
        let moved = transaction
            .execute(&move_sql, &[&id, &upto])
            .await
            .map_err(failed)?;
        transaction
            .execute(
                &format!(
                    "DELETE FROM {} WHERE dataflow_sink = $1 AND dataflow_checkpoint <= $2",
                    table.staging()
                ),
                &[&id, &upto],
            )
            .await
            .map_err(failed)?;
        record_progress(
            transaction,
            &table,
            &id,
            (progress, tail),
            "cannot commit rows",
        )
        .await?;
        Ok(moved)
    }

    async fn move_staged(&mut self, upto: u64, progress: u64, tail: u64) -> Result<()> {
        let mut retry = self.retry();
        loop {
            match self.try_move(upto, progress, tail).await {
                Ok(_) => break,
                Err(failure) => {
                    if matches!(failure, Attempt::Transient(_)) {
                        self.connection = None;
                    }
                    retry.failed(failure).await?
                }
            }
        }
        retry.succeeded();
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        for event in events {
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            let row = event.payload.as_row().unwrap_or(&[]);
            for (column, values) in self.columns.iter().zip(self.values.iter_mut()) {
                values.push(row.get(column.field), column.ty == FieldType::Json);
            }
            self.rows += 1;
            if self.rows >= self.settings.batch_size {
                self.send_batch().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // Staged rows are not for readers until committed: a run with checkpoints sends full
        // batches only, and the rest at the barrier.
        if self.exactly_once {
            return Ok(());
        }
        self.send_batch().await
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<()> {
        if !self.exactly_once {
            return self.send_batch().await;
        }
        self.send_batch().await?;
        self.skip_at.insert(checkpoint, self.skip);
        self.last_prepared = checkpoint;
        Ok(())
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        let tail = self.skip_at.get(&checkpoint).copied().unwrap_or(0);
        self.move_staged(checkpoint, checkpoint, tail).await?;
        self.committed = checkpoint;
        self.committed_tail = tail;
        self.staged.retain(|epoch, _| *epoch > checkpoint);
        self.skip_at.retain(|id, _| *id > checkpoint);
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.send_batch().await?;
        if !self.exactly_once {
            return Ok(());
        }
        // Everything written is final: staged rows of checkpoints that were not saved, and
        // those after the last barrier, are moved, counted beside the last saved checkpoint.
        let after: u64 = self.staged.values().sum();
        let tail = self.committed_tail + after;
        self.move_staged(u64::MAX >> 1, self.committed, tail)
            .await?;
        self.staged.clear();
        Ok(())
    }

    fn count_retries(&mut self, retries: StoreRetries) {
        self.retries = retries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Setting;
    use dataflow_event::Schema;
    use std::sync::Arc;

    fn configured(settings: Vec<(&str, SettingValue)>) -> (Option<SinkKind>, Vec<String>) {
        let mut problems = Vec::new();
        let written = settings
            .into_iter()
            .map(|(key, value)| Setting {
                key: key.to_string(),
                place: Place::path(key),
                value,
            })
            .collect();
        let mut settings = Settings::new(
            "sink",
            "postgres",
            Place::path("sinks[0]"),
            std::path::Path::new("."),
            written,
            &mut problems,
        );
        let kind = configure(&mut settings);
        settings.finish();
        (kind, problems.iter().map(|p| p.to_string()).collect())
    }

    fn text(value: &str) -> SettingValue {
        SettingValue::Str(value.into())
    }

    #[test]
    fn settings_problems_are_listed_with_their_places() {
        let (kind, problems) = configured(vec![
            ("url", text("postgres://127.0.0.1/test")),
            ("host", text("127.0.0.1")),
            ("table", text("1table")),
            ("mode", text("upsert")),
            ("batch_size", SettingValue::Int(0)),
        ]);
        assert!(kind.is_none());
        assert_eq!(
            problems,
            [
                "sinks[0].url: give either `url` or its parts (`host`, `port`, `user`, `password`, `dbname`), not both",
                "sinks[0].table: invalid table `1table`: write `name` or `schema.name`, letters, digits and `_`, the name at most 46 characters",
                "sinks[0]: mode upsert needs `key`: the columns a row is replaced on",
                "sinks[0].batch_size: `batch_size` must be at least 1",
            ]
        );
        let (_, problems) = configured(vec![
            ("table", text("t")),
            ("key", text("k")),
            (
                "columns",
                SettingValue::Map(vec![("n".into(), SettingValue::Bool(false))]),
            ),
        ]);
        assert_eq!(
            problems,
            [
                "sinks[0].columns: `columns` must map columns to result fields (`{ column: field }`) or list fields (quote field names that YAML reads as booleans: `\"n\"`)",
                "sinks[0].key: `key` applies to mode upsert only",
            ]
        );
    }

    #[test]
    fn the_mapping_is_checked_against_the_results_layout() {
        let (kind, problems) = configured(vec![
            ("url", text("postgres://127.0.0.1/test")),
            ("table", text("public.results")),
            ("mode", text("upsert")),
            ("key", SettingValue::Seq(vec![text("id"), text("day")])),
            (
                "columns",
                SettingValue::Map(vec![
                    ("id".into(), text("key")),
                    ("amount".into(), text("total")),
                ]),
            ),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let Some(SinkKind::Postgres(settings)) = kind else {
            panic!("a postgres sink");
        };
        assert_eq!(settings.id, "public.results");
        assert_eq!(
            settings.table.staging(),
            "\"public\".\"results_dataflow_staging\""
        );
        let schema = Schema::new([("key", FieldType::Int), ("n", FieldType::Int)]).expect("schema");
        let problems: Vec<String> = check_layout(&settings, &Layout::Row(Arc::new(schema)))
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            problems,
            [
                "sinks[0].columns.amount: column `amount` takes field `total`, which the results do not have (they have key, n)",
                "sinks[0].key: key `day` is not one of the columns written",
            ]
        );
        assert_eq!(check_layout(&settings, &Layout::Object).len(), 1);
    }

    #[test]
    fn values_are_sent_typed_and_json_as_text() {
        let mut ints = Values::new(FieldType::Timestamp);
        ints.push(Some(&Value::Int(5)), false);
        ints.push(Some(&Value::Null), false);
        ints.push(None, false);
        assert!(matches!(&ints, Values::Int(v) if v == &[Some(5), None, None]));
        let mut json = Values::new(FieldType::Json);
        json.push(Some(&Value::str("a\"b")), true);
        json.push(Some(&Value::Int(7)), true);
        assert!(
            matches!(&json, Values::Text(v) if v == &[Some("\"a\\\"b\"".to_string()), Some("7".to_string())])
        );
        let mut floats = Values::new(FieldType::Float);
        floats.push(Some(&Value::Int(2)), false);
        assert!(matches!(&floats, Values::Float(v) if v == &[Some(2.0)]));
    }
}

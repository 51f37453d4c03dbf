//! `type: parquet`: results as Parquet files in a directory, partitioned by a field or by the
//! hour of a time, published exactly once with checkpoints.
//!
//! The columns follow the results' layout (see [`columns`]): window results are their fields
//! (`key`, `window_start`, `window_end`, the aggregates, `is_update`); other results carry their
//! event time, type and id first, as the JSON Lines sinks write them. A result with a value that
//! does not fit its column (a null in a required column, text in a number column) is handed
//! back as [`Rejected`] and becomes a dead letter; nothing is dropped.
//!
//! Files are written, named `part-<seq>.parquet.tmp`, under `.in-progress/` while a checkpoint
//! interval runs; at the barrier of checkpoint `n` they are closed (footer written, fsynced) and
//! the directory is renamed to `.pending-<n>/`; once checkpoint `n` is saved each file is
//! renamed to `<partition>/part-<n>-<seq>.parquet` and the directories are fsynced. pyarrow and
//! Spark skip directories whose names start with a dot, and a `*.parquet` glob matches no file
//! that is not published, so a reader sees whole files of completed checkpoints only. A restore
//! from checkpoint `r` publishes the pending files of checkpoints up to `r`, deletes later ones
//! and everything in progress, and deletes published files of checkpoints after `r` (the replay
//! writes their rows again). Without checkpoints everything is published when the run ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::Compression;
use ::parquet::file::properties::WriterProperties;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use dataflow_event::json::write_value;
use dataflow_event::{Event, FieldType, Layout, Payload, Value};
use tokio::io::AsyncWriteExt;

use crate::config::{PathUse, Place, Problem, Settings};
use crate::registry::{SinkKind, SinkSpec};
use crate::sink::{Rejected, ResultFormat, Sink};
use crate::{ConnectorError, Result};

/// The typed settings of a parquet sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetSettings {
    /// Where the sink was written in the config.
    pub place: Place,
    /// The directory the files are published in.
    pub dir: PathBuf,
    /// A result field whose value names a partition directory (`auction=12/`).
    pub partition_by: Option<Setting>,
    /// What time partitions by hour (`dt=YYYY-MM-DD/hour=HH/`): a timestamp field of the
    /// results, or the event time.
    pub partition_time: Option<PartitionTime>,
    /// The most rows of a row group.
    pub row_group_size: usize,
    /// How column chunks are compressed.
    pub compression: ParquetCompression,
}

/// A setting's value with where it was written, so that a check against the results' layout
/// can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The value as written.
    pub value: String,
    /// Where.
    pub place: Place,
}

/// The time whose hour names a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionTime {
    /// The result's event time (for window results, the last millisecond of the window).
    EventTime,
    /// A timestamp field of the results (`window_start`).
    Field(Setting),
}

/// How column chunks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParquetCompression {
    /// Snappy, the default of most writers.
    Snappy,
    /// None.
    Uncompressed,
}

/// The default `row_group_size`.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 128 * 1024;
/// The largest `row_group_size`: a row group is buffered in memory, per open partition.
pub const MAX_ROW_GROUP_SIZE: usize = 1 << 24;

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &[
    "path",
    "partition_by",
    "partition_time",
    "row_group_size",
    "compression",
];

/// `type: parquet` settings: `path` (a directory), `partition_by`, `partition_time`,
/// `row_group_size`, `compression`. Fields are checked against the results' layout by
/// [`check_layout`], once the pipeline knows it.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SinkKind> {
    let dir = settings.path("path", PathUse::WriteDir);
    let partition_by = settings
        .string("partition_by")
        .map(|(value, place)| Setting { value, place });
    let partition_time =
        settings
            .string("partition_time")
            .map(|(value, place)| match value.as_str() {
                "event_time" => PartitionTime::EventTime,
                _ => PartitionTime::Field(Setting { value, place }),
            });
    // A refused value is reported and replaced by the default, so that the other settings are
    // still checked against the results: every problem is listed at once.
    let row_group_size = match settings.u64("row_group_size") {
        None => DEFAULT_ROW_GROUP_SIZE,
        Some((rows, place)) => match usize::try_from(rows) {
            Ok(rows) if (1..=MAX_ROW_GROUP_SIZE).contains(&rows) => rows,
            _ => {
                settings.problem(
                    place,
                    format!("`row_group_size` must be between 1 and {MAX_ROW_GROUP_SIZE} rows, not {rows}"),
                );
                DEFAULT_ROW_GROUP_SIZE
            }
        },
    };
    let compression = match settings.string("compression") {
        None => ParquetCompression::Snappy,
        Some((name, place)) => match name.as_str() {
            "snappy" => ParquetCompression::Snappy,
            "none" | "uncompressed" => ParquetCompression::Uncompressed,
            other => {
                settings.problem(
                    place,
                    format!("unknown compression `{other}`: expected snappy or none"),
                );
                ParquetCompression::Snappy
            }
        },
    };
    let Some(dir) = dir else {
        let place = settings.place();
        settings.problem(place, "a parquet sink needs `path` (a directory)");
        return None;
    };
    Some(SinkKind::Parquet(ParquetSettings {
        place: settings.place(),
        dir,
        partition_by,
        partition_time,
        row_group_size,
        compression,
    }))
}

/// What a column is filled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnSource {
    /// The event time.
    Time,
    /// The event type.
    Type,
    /// The event id.
    Id,
    /// The payload's field at this index.
    Field(usize),
}

/// One column of the files, from the results' layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// The type of the layout's field; `json` is written as JSON text.
    pub ty: FieldType,
    /// Whether it may hold nulls.
    pub nullable: bool,
    source: ColumnSource,
}

/// The columns of results in `format`, or why they have none: a layout without a schema has no
/// columns known before the run. Results that are not window results carry their event time
/// (named as their source reads it), then their type and id (when the source reads them),
/// unless the schema declares a field of that name, as the JSON Lines sinks write them.
pub fn columns(format: &ResultFormat) -> std::result::Result<Vec<Column>, String> {
    let Layout::Row(schema) = &format.layout else {
        return Err(
            "a parquet sink needs typed results: declare the source's `format.schema`, or end the pipeline in a window".into(),
        );
    };
    let mut columns = Vec::new();
    if format.write_time {
        let time = format.fields.time_field.as_deref().unwrap_or("timestamp");
        let metadata = [
            (Some(time), ColumnSource::Time, FieldType::Timestamp, false),
            (
                format.fields.type_field.as_deref(),
                ColumnSource::Type,
                FieldType::String,
                true,
            ),
            (
                format.fields.id_field.as_deref(),
                ColumnSource::Id,
                FieldType::String,
                true,
            ),
        ];
        for (name, source, ty, nullable) in metadata {
            let Some(name) = name else { continue };
            if schema.index_of(name).is_some() || columns.iter().any(|c: &Column| c.name == name) {
                continue;
            }
            columns.push(Column {
                name: name.to_string(),
                ty,
                nullable,
                source,
            });
        }
    }
    for (index, field) in schema.fields().iter().enumerate() {
        columns.push(Column {
            name: field.name.clone(),
            ty: field.ty,
            nullable: field.nullable,
            source: ColumnSource::Field(index),
        });
    }
    Ok(columns)
}

/// The problems of a parquet sink's settings against the results it will get: results without
/// a schema, a partition field the results lack, a partition time that is not a timestamp; and
/// a directory `shared` with an earlier parquet sink (each recovers its directory to the
/// restored checkpoint, and their files' names would collide).
pub fn check_layout(
    settings: &ParquetSettings,
    format: &ResultFormat,
    shared: bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if shared {
        problems.push(Problem {
            place: settings.place.clone(),
            message: format!(
                "another parquet sink writes in {}: each needs a directory of its own",
                settings.dir.display()
            ),
        });
    }
    let columns = match columns(format) {
        Ok(columns) => columns,
        Err(message) => {
            problems.push(Problem {
                place: settings.place.clone(),
                message,
            });
            return problems;
        }
    };
    let names = || {
        columns
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(field) = &settings.partition_by {
        match columns.iter().find(|c| c.name == field.value) {
            None => problems.push(Problem {
                place: field.place.clone(),
                message: format!(
                    "unknown partition field `{}`: the results have {}",
                    field.value,
                    names()
                ),
            }),
            Some(column) if column.name.starts_with(['.', '_']) => problems.push(Problem {
                place: field.place.clone(),
                message: format!(
                    "cannot partition by `{}`: readers skip directories whose names start with `.` or `_`",
                    column.name
                ),
            }),
            Some(_) => {}
        }
    }
    if let Some(PartitionTime::Field(field)) = &settings.partition_time {
        match columns.iter().find(|c| c.name == field.value) {
            Some(column) if column.ty == FieldType::Timestamp => {}
            Some(column) => problems.push(Problem {
                place: field.place.clone(),
                message: format!(
                    "`partition_time` must be `event_time` or a timestamp field, and `{}` is {}",
                    column.name, column.ty
                ),
            }),
            None => problems.push(Problem {
                place: field.place.clone(),
                message: format!(
                    "unknown partition time `{}`: expected `event_time` or a timestamp field of the results ({})",
                    field.value,
                    names()
                ),
            }),
        }
    }
    problems
}

fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Bool => DataType::Boolean,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::String | FieldType::Json => DataType::Utf8,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

/// The field metadata key naming a column's dataflow type where Arrow's does not say it: `json`
/// for a text column holding JSON.
pub const TYPE_METADATA: &str = "dataflow.type";

/// The Arrow schema of `columns`. A `json` column is text holding JSON, marked so in its
/// metadata ([`TYPE_METADATA`]), so that a reader can parse it.
pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(ArrowSchema::new(
        columns
            .iter()
            .map(|c| {
                let field = ArrowField::new(c.name.clone(), arrow_type(c.ty), c.nullable);
                if c.ty == FieldType::Json {
                    field.with_metadata(HashMap::from([(
                        TYPE_METADATA.to_string(),
                        "json".to_string(),
                    )]))
                } else {
                    field
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// The value of `column` in `event`, borrowed where it can be.
enum Cell<'a> {
    Value(&'a Value),
    Text(Option<&'a str>),
    Time(i64),
}

fn cell<'a>(column: &Column, event: &'a Event) -> Cell<'a> {
    match column.source {
        ColumnSource::Time => Cell::Time(event.event_time),
        ColumnSource::Type => Cell::Text(event.kind.as_deref()),
        ColumnSource::Id => Cell::Text(event.id.as_deref()),
        ColumnSource::Field(index) => match &event.payload {
            Payload::Row(values) => Cell::Value(values.get(index).unwrap_or(&Value::Null)),
            // Columns exist only for row layouts: an object payload has no such field.
            Payload::Object(_) => Cell::Value(&Value::Null),
        },
    }
}

/// Why `cell` does not fit `column`, if it does not.
fn misfit(column: &Column, cell: &Cell<'_>) -> Option<String> {
    let value = match cell {
        Cell::Time(_) => return None,
        Cell::Text(text) => {
            return (text.is_none() && !column.nullable).then(|| {
                format!(
                    "column `{}` is required and the result has none",
                    column.name
                )
            })
        }
        Cell::Value(value) => value,
    };
    let fits = match (column.ty, value) {
        (_, Value::Null) => column.nullable,
        (FieldType::Json, _) => true,
        (FieldType::Bool, Value::Bool(_)) => true,
        (FieldType::Int | FieldType::Timestamp, Value::Int(_)) => true,
        (FieldType::Float, Value::Float(_) | Value::Int(_)) => true,
        (FieldType::String, Value::Str(_)) => true,
        _ => false,
    };
    (!fits).then(|| {
        format!(
            "value of `{}` does not fit its parquet column: {} where {}{} is expected",
            column.name,
            value.type_name(),
            column.ty,
            if column.nullable { " or null" } else { "" }
        )
    })
}

/// The rows of one partition taken from a batch, column by column.
enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(ty: FieldType) -> Builder {
        match ty {
            FieldType::Bool => Builder::Bool(BooleanBuilder::new()),
            FieldType::Int => Builder::Int(Int64Builder::new()),
            FieldType::Float => Builder::Float(Float64Builder::new()),
            FieldType::String | FieldType::Json => Builder::Text(StringBuilder::new()),
            FieldType::Timestamp => {
                Builder::Time(TimestampMillisecondBuilder::new().with_timezone("UTC"))
            }
        }
    }

    /// Appends a cell that [`misfit`] accepted; `scratch` holds JSON text.
    fn append(&mut self, ty: FieldType, cell: &Cell<'_>, scratch: &mut Vec<u8>) {
        match (self, cell) {
            (Builder::Time(b), Cell::Time(time)) => b.append_value(*time),
            (Builder::Text(b), Cell::Text(text)) => b.append_option(*text),
            (builder, Cell::Value(value)) => match (builder, value) {
                (Builder::Bool(b), Value::Bool(v)) => b.append_value(*v),
                (Builder::Int(b), Value::Int(v)) => b.append_value(*v),
                (Builder::Time(b), Value::Int(v)) => b.append_value(*v),
                (Builder::Float(b), Value::Float(v)) => b.append_value(*v),
                (Builder::Float(b), Value::Int(v)) => b.append_value(*v as f64),
                (Builder::Text(b), Value::Null) => b.append_null(),
                (Builder::Text(b), Value::Str(v)) if ty == FieldType::String => b.append_value(v),
                (Builder::Text(b), other) => {
                    scratch.clear();
                    write_value(scratch, other);
                    b.append_value(String::from_utf8_lossy(scratch));
                }
                (builder, _) => builder.append_null(),
            },
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// The civil date and hour (UTC) of epoch milliseconds `millis`: `(year, month, day, hour)`.
fn civil_hour(millis: i64) -> (i64, u32, u32, u32) {
    let days = millis.div_euclid(86_400_000);
    let hour = (millis.rem_euclid(86_400_000) / 3_600_000) as u32;
    // Days since 0000-03-01 in 400-year eras (each 146097 days), as in the proleptic Gregorian
    // calendar: March first makes the leap day the last day of a year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// The directory of the hour of `millis`: `dt=YYYY-MM-DD/hour=HH`.
fn hour_directory(millis: i64) -> String {
    let (year, month, day, hour) = civil_hour(millis);
    format!("dt={year:04}-{month:02}-{day:02}/hour={hour:02}")
}

/// Hive's name for the partition of a null or empty value.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// `value` as a directory name: letters, digits, `-`, `_` and `.` as they are, any other byte
/// as `%XX` (so `/`, `=` and `..` cannot escape or confuse the partition).
fn partition_text(value: &Cell<'_>) -> String {
    let text = match value {
        Cell::Time(time) => time.to_string(),
        Cell::Text(None) | Cell::Value(Value::Null) => return NULL_PARTITION.into(),
        Cell::Text(Some(text)) => text.to_string(),
        Cell::Value(value) => value.to_key_string(),
    };
    if text.is_empty() {
        return NULL_PARTITION.into();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_') {
            out.push(byte as char);
        } else if byte == b'.' && text != "." && text != ".." {
            out.push('.');
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How results are spread over partition directories.
#[derive(Debug)]
struct Partitioner {
    time: Option<Option<usize>>,
    field: Option<(String, usize)>,
}

impl Partitioner {
    /// The relative directory of `event`'s partition ("" without partitioning).
    fn directory(&self, columns: &[Column], event: &Event) -> String {
        let mut parts = Vec::new();
        match self.time {
            None => {}
            Some(None) => parts.push(hour_directory(event.event_time)),
            Some(Some(index)) => match cell(&columns[index], event) {
                Cell::Value(Value::Int(millis)) => parts.push(hour_directory(*millis)),
                Cell::Time(millis) => parts.push(hour_directory(millis)),
                _ => parts.push(format!("dt={NULL_PARTITION}/hour={NULL_PARTITION}")),
            },
        }
        if let Some((name, index)) = &self.field {
            let value = cell(&columns[*index], event);
            parts.push(format!("{name}={}", partition_text(&value)));
        }
        parts.join("/")
    }
}

/// A file being written in `.in-progress/`: the Parquet writer encodes into a buffer that is
/// handed to the file whenever it holds enough.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    file: tokio::fs::File,
    path: PathBuf,
    /// When it was last written to, in writes of the sink: the least recent is closed first.
    last_used: u64,
}

/// The most files open at once. A partition field of many values would otherwise hold a file
/// descriptor (and a row group in memory) per value: past this many, the file written to least
/// recently is closed, and its partition's next rows of the interval start a new file.
pub const MAX_OPEN_FILES: usize = 128;

/// Closes `file` durably: footer written, everything handed to the file, fsynced.
async fn close(mut file: OpenFile) -> Result<()> {
    let context = format!("cannot close {}", file.path.display());
    file.writer
        .finish()
        .map_err(parquet_error(context.clone()))?;
    drain(&mut file).await?;
    file.file.flush().await.map_err(io_error(context.clone()))?;
    file.file.sync_all().await.map_err(io_error(context))
}

const IN_PROGRESS: &str = ".in-progress";
const PENDING: &str = ".pending-";
/// Hand encoded bytes to the file once this much is buffered.
const WRITE_CHUNK: usize = 1 << 20;

fn pending_name(id: u64) -> String {
    format!("{PENDING}{id:020}")
}

/// The checkpoint id of a `.pending-<id>` directory.
fn pending_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PENDING)?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// The name a file numbered `seq` has in progress and pending: not `*.parquet`, so that a
/// reader globbing for Parquet files never takes one, even in a hidden directory.
fn in_progress_name(seq: u64) -> String {
    format!("part-{seq:06}{UNPUBLISHED}")
}

/// The ending of files not published yet.
const UNPUBLISHED: &str = ".parquet.tmp";

/// The name a file numbered `seq` of checkpoint `id` is published under.
fn published_name(id: u64, seq: &str) -> String {
    format!("part-{id:020}-{seq}.parquet")
}

/// The checkpoint id of a published file's name.
fn published_id(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (id, seq) = rest.split_once('-')?;
    (id.len() == 20 && seq.len() >= 6 && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| ConnectorError::Io {
        context,
        cause: source,
    }
}

fn parquet_error(
    context: String,
) -> impl FnOnce(::parquet::errors::ParquetError) -> ConnectorError {
    move |error| ConnectorError::Runtime(format!("{context}: {error}"))
}

/// Every file under `dir` (recursively), skipping directories whose names start with `.` when
/// `skip_hidden`, with its path relative to `dir`.
fn files_under(dir: &Path, skip_hidden: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let entries = match std::fs::read_dir(dir.join(&relative)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let path = relative.join(&name);
            if entry.file_type()?.is_dir() {
                if !(skip_hidden && name.to_string_lossy().starts_with('.')) {
                    stack.push(path);
                }
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Makes renames and new entries in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(format!("cannot sync directory {}", dir.display())))
}

/// Publishes the files of `.pending-<id>` in `dir`: each moves to its partition directory
/// under its final name, the directories are synced, then the pending directory goes. A
/// publication cut short by a crash is finished by the next one (the files already moved are
/// no longer pending).
fn publish(dir: &Path, id: u64) -> Result<()> {
    let pending = dir.join(pending_name(id));
    let files = files_under(&pending, false)
        .map_err(io_error(format!("cannot list {}", pending.display())))?;
    let mut synced: Vec<PathBuf> = Vec::new();
    for relative in files {
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(seq) = name
            .strip_prefix("part-")
            .and_then(|rest| rest.strip_suffix(UNPUBLISHED))
        else {
            continue;
        };
        let partition = dir.join(relative.parent().unwrap_or(Path::new("")));
        std::fs::create_dir_all(&partition).map_err(io_error(format!(
            "cannot create directory {}",
            partition.display()
        )))?;
        let target = partition.join(published_name(id, seq));
        std::fs::rename(pending.join(&relative), &target)
            .map_err(io_error(format!("cannot publish {}", target.display())))?;
        if !synced.contains(&partition) {
            synced.push(partition);
        }
    }
    for partition in &synced {
        sync_dir(partition)?;
        // New partition directories are entries of their parents.
        let mut parent = partition.parent();
        while let Some(directory) = parent.filter(|p| p.starts_with(dir) && *p != dir) {
            sync_dir(directory)?;
            parent = directory.parent();
        }
    }
    std::fs::remove_dir_all(&pending)
        .map_err(io_error(format!("cannot remove {}", pending.display())))?;
    sync_dir(dir)
}

/// The `.pending-<id>` directories of `dir`, by id.
fn pending_ids(dir: &Path) -> Result<Vec<u64>> {
    let listing = format!("cannot list {}", dir.display());
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_error(listing.clone()))?
        .map(|entry| {
            entry
                .map(|e| pending_id(&e.file_name().to_string_lossy()))
                .map_err(io_error(listing.clone()))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Recovers `dir` to checkpoint `restored` (see the module documentation); `None` is a fresh
/// start: every file a parquet sink published is deleted.
fn recover(dir: &Path, restored: Option<u64>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_error(format!(
        "cannot create directory {}",
        dir.display()
    )))?;
    let covered = |id: u64| restored.is_some_and(|restored| id <= restored);
    let in_progress = dir.join(IN_PROGRESS);
    if in_progress.exists() {
        std::fs::remove_dir_all(&in_progress).map_err(io_error(format!(
            "cannot discard {}",
            in_progress.display()
        )))?;
    }
    for id in pending_ids(dir)? {
        if covered(id) {
            publish(dir, id)?;
        } else {
            let pending = dir.join(pending_name(id));
            std::fs::remove_dir_all(&pending)
                .map_err(io_error(format!("cannot discard {}", pending.display())))?;
        }
    }
    let files =
        files_under(dir, true).map_err(io_error(format!("cannot list {}", dir.display())))?;
    for relative in files {
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if published_id(&name).is_some_and(|id| !covered(id)) {
            let path = dir.join(&relative);
            std::fs::remove_file(&path)
                .map_err(io_error(format!("cannot discard {}", path.display())))?;
        }
    }
    sync_dir(dir)
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ConnectorError::Runtime(format!("file-system task failed: {error}")))?
}

/// Exactly-once Parquet files (see the module documentation).
pub struct ParquetSink {
    dir: PathBuf,
    columns: Vec<Column>,
    schema: SchemaRef,
    properties: WriterProperties,
    partitioner: Partitioner,
    /// The files of the current checkpoint interval, by partition directory.
    open: HashMap<String, OpenFile>,
    /// The number of the next file of the interval.
    next_seq: u64,
    /// Partition writes so far, the clock of [`OpenFile::last_used`].
    writes: u64,
    /// The newest checkpoint whose barrier passed, so that the final files are named after it.
    last_prepared: u64,
    rejected: Vec<Rejected>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// Opens the directory of `spec` for results in `format`, recovered to checkpoint
    /// `restored` (`None`: a fresh start, which deletes every published file).
    pub async fn open(
        spec: &SinkSpec,
        format: ResultFormat,
        restored: Option<u64>,
    ) -> Result<ParquetSink> {
        let SinkKind::Parquet(settings) = &spec.kind else {
            return Err(ConnectorError::Runtime(
                "a parquet sink needs its settings".into(),
            ));
        };
        let columns = columns(&format).map_err(ConnectorError::Runtime)?;
        let find = |name: &str| {
            columns.iter().position(|c| c.name == name).ok_or_else(|| {
                ConnectorError::Runtime(format!("the results have no field `{name}`"))
            })
        };
        let time = match &settings.partition_time {
            None => None,
            Some(PartitionTime::EventTime) => Some(None),
            Some(PartitionTime::Field(field)) => Some(Some(find(&field.value)?)),
        };
        let field = match &settings.partition_by {
            None => None,
            Some(field) => Some((field.value.clone(), find(&field.value)?)),
        };
        let compression = match settings.compression {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Uncompressed => Compression::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(settings.row_group_size))
            .set_compression(compression)
            .build();
        let dir = settings.dir.clone();
        {
            let dir = dir.clone();
            blocking(move || recover(&dir, restored)).await?;
        }
        Ok(ParquetSink {
            schema: arrow_schema(&columns),
            columns,
            dir,
            properties,
            partitioner: Partitioner { time, field },
            open: HashMap::new(),
            next_seq: 0,
            writes: 0,
            last_prepared: restored.unwrap_or(0),
            rejected: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Writes `batch` of `partition`, opening its file in progress if it has none.
    async fn write_partition(&mut self, partition: &str, batch: RecordBatch) -> Result<()> {
        self.writes += 1;
        if !self.open.contains_key(partition) {
            if self.open.len() >= MAX_OPEN_FILES {
                let least_recent = self
                    .open
                    .iter()
                    .min_by_key(|(_, file)| file.last_used)
                    .map(|(name, _)| name.clone());
                if let Some(file) = least_recent.and_then(|name| self.open.remove(&name)) {
                    close(file).await?;
                }
            }
            let directory = self.dir.join(IN_PROGRESS).join(partition);
            tokio::fs::create_dir_all(&directory)
                .await
                .map_err(io_error(format!(
                    "cannot create directory {}",
                    directory.display()
                )))?;
            let path = directory.join(in_progress_name(self.next_seq));
            self.next_seq += 1;
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(io_error(format!("cannot create {}", path.display())))?;
            let writer = ArrowWriter::try_new(
                Vec::with_capacity(WRITE_CHUNK),
                self.schema.clone(),
                Some(self.properties.clone()),
            )
            .map_err(parquet_error(format!("cannot start {}", path.display())))?;
            let file = OpenFile {
                writer,
                file,
                path,
                last_used: 0,
            };
            self.open.insert(partition.to_string(), file);
        }
        let Some(open) = self.open.get_mut(partition) else {
            return Ok(());
        };
        open.last_used = self.writes;
        open.writer.write(&batch).map_err(parquet_error(format!(
            "cannot write {}",
            open.path.display()
        )))?;
        if open.writer.inner().len() >= WRITE_CHUNK {
            drain(open).await?;
        }
        Ok(())
    }

    /// Closes every file in progress durably and moves them to `.pending-<id>`.
    async fn seal(&mut self, id: u64) -> Result<()> {
        // No file was started in the interval (files closed early are in progress too).
        if self.next_seq == 0 {
            return Ok(());
        }
        let mut open: Vec<(String, OpenFile)> = self.open.drain().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, file) in open {
            close(file).await?;
        }
        self.next_seq = 0;
        let dir = self.dir.clone();
        blocking(move || {
            // Every directory of the interval holds synced files; sync the directories too,
            // then rename the whole interval at once.
            let in_progress = dir.join(IN_PROGRESS);
            let mut directories: Vec<PathBuf> = files_under(&in_progress, false)
                .map_err(io_error(format!("cannot list {}", in_progress.display())))?
                .into_iter()
                .filter_map(|file| file.parent().map(Path::to_path_buf))
                .collect();
            directories.sort();
            directories.dedup();
            for directory in directories {
                let mut current = Some(in_progress.join(directory));
                while let Some(path) = current.filter(|p| p.starts_with(&in_progress)) {
                    sync_dir(&path)?;
                    current = path.parent().map(Path::to_path_buf);
                }
            }
            let pending = dir.join(pending_name(id));
            std::fs::rename(&in_progress, &pending)
                .map_err(io_error(format!("cannot seal {}", pending.display())))?;
            sync_dir(&dir)
        })
        .await
    }

    /// Publishes every pending interval up to checkpoint `id`.
    async fn publish_up_to(&mut self, id: u64) -> Result<()> {
        let dir = self.dir.clone();
        blocking(move || {
            for pending in pending_ids(&dir)? {
                if pending <= id {
                    publish(&dir, pending)?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// Hands what `file`'s writer encoded so far to the file.
async fn drain(file: &mut OpenFile) -> Result<()> {
    let buffer = file.writer.inner_mut();
    if buffer.is_empty() {
        return Ok(());
    }
    file.file
        .write_all(buffer)
        .await
        .map_err(io_error(format!("cannot write to {}", file.path.display())))?;
    // The writer counts what it wrote itself: emptying its buffer does not move its offsets.
    file.writer.inner_mut().clear();
    Ok(())
}

#[async_trait]
impl Sink for ParquetSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        let mut batches: Vec<(String, Vec<Builder>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut cells = Vec::with_capacity(self.columns.len());
        'events: for event in events {
            cells.clear();
            for column in &self.columns {
                let value = cell(column, event);
                if let Some(reason) = misfit(column, &value) {
                    self.rejected.push(Rejected {
                        event: event.clone(),
                        reason,
                    });
                    continue 'events;
                }
                cells.push(value);
            }
            let partition = self.partitioner.directory(&self.columns, event);
            let slot = match index.get(&partition) {
                Some(slot) => *slot,
                None => {
                    let builders = self.columns.iter().map(|c| Builder::new(c.ty)).collect();
                    batches.push((partition.clone(), builders));
                    index.insert(partition, batches.len() - 1);
                    batches.len() - 1
                }
            };
            let builders = &mut batches[slot].1;
            for ((builder, column), value) in builders.iter_mut().zip(&self.columns).zip(&cells) {
                builder.append(column.ty, value, &mut self.scratch);
            }
        }
        for (partition, mut builders) in batches {
            let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
            let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|error| {
                ConnectorError::Runtime(format!(
                    "cannot build a batch for {}: {error}",
                    self.dir.display()
                ))
            })?;
            self.write_partition(&partition, batch).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // Files in progress are not for readers until published: nothing to show early.
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<()> {
        self.last_prepared = checkpoint;
        self.seal(checkpoint).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        self.publish_up_to(checkpoint).await
    }

    async fn finish(&mut self) -> Result<()> {
        // The end of the run: everything written is final, pending intervals included, and
        // what follows the last barrier is published after it. A later restore from an earlier
        // checkpoint deletes these files with every file after that checkpoint.
        self.publish_up_to(u64::MAX).await?;
        let id = self.last_prepared + 1;
        self.seal(id).await?;
        self.publish_up_to(id).await
    }

    fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }
}

/// The published files of a parquet sink's directory, relative to it, in name order (files in
/// progress and pending are not published yet).
pub fn published_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(files_under(dir, true)?
        .into_iter()
        .filter(|relative| {
            relative
                .file_name()
                .is_some_and(|name| published_id(&name.to_string_lossy()).is_some())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_hours_match_known_dates() {
        assert_eq!(civil_hour(0), (1970, 1, 1, 0));
        // 2024-02-29T13:05:00Z, a leap day.
        assert_eq!(civil_hour(1_709_211_900_000), (2024, 2, 29, 13));
        // 2023-12-31T23:59:59.999Z.
        assert_eq!(civil_hour(1_704_067_199_999), (2023, 12, 31, 23));
        // 1969-12-31T23:00:00Z, before the epoch.
        assert_eq!(civil_hour(-3_600_000), (1969, 12, 31, 23));
        assert_eq!(hour_directory(1_709_211_900_000), "dt=2024-02-29/hour=13");
    }

    /// Against a day-by-day count from the epoch, over 1000 years on both sides.
    #[test]
    fn civil_hours_match_a_naive_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut year, mut month, mut day) = (1970_i64, 1_u32, 1_u32);
        for days in 0..366_000_i64 {
            assert_eq!(
                civil_hour(days * 86_400_000 + 7_200_000),
                (year, month, day, 2)
            );
            day += 1;
            if day > month_days(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
        let (mut year, mut month, mut day) = (1969_i64, 12_u32, 31_u32);
        for days in 1..366_000_i64 {
            assert_eq!(civil_hour(-days * 86_400_000), (year, month, day, 0));
            if day == 1 {
                month = if month == 1 { 12 } else { month - 1 };
                if month == 12 {
                    year -= 1;
                }
                day = month_days(year, month);
            } else {
                day -= 1;
            }
        }
    }

    #[test]
    fn partition_values_cannot_leave_their_directory() {
        let text = |value: Value| partition_text(&Cell::Value(&value));
        assert_eq!(text(Value::str("a/b=c")), "a%2Fb%3Dc");
        assert_eq!(text(Value::str("..")), "%2E%2E");
        assert_eq!(text(Value::str("v1.2")), "v1.2");
        assert_eq!(text(Value::str("")), NULL_PARTITION);
        assert_eq!(text(Value::Null), NULL_PARTITION);
        assert_eq!(text(Value::Int(-12)), "-12");
    }

    fn spec(dir: &Path, partition_by: Option<&str>) -> SinkSpec {
        SinkSpec {
            kind: SinkKind::Parquet(ParquetSettings {
                place: Place::path("sinks[0]"),
                dir: dir.to_path_buf(),
                partition_by: partition_by.map(|field| Setting {
                    value: field.into(),
                    place: Place::path("sinks[0].partition_by"),
                }),
                partition_time: None,
                row_group_size: 2,
                compression: ParquetCompression::Snappy,
            }),
            time_format: Default::default(),
        }
    }

    fn format() -> ResultFormat {
        let schema = dataflow_event::Schema::from_fields([
            dataflow_event::Field {
                name: "n".into(),
                ty: FieldType::Int,
                nullable: false,
            },
            dataflow_event::Field {
                name: "s".into(),
                ty: FieldType::String,
                nullable: true,
            },
        ])
        .expect("schema");
        ResultFormat::new(Layout::Row(Arc::new(schema)), false)
    }

    /// Rows per published file, from the files' own footers.
    fn published_rows(dir: &Path) -> Vec<(String, i64)> {
        use ::parquet::file::reader::FileReader;
        published_files(dir)
            .expect("published files")
            .into_iter()
            .map(|relative| {
                let file = std::fs::File::open(dir.join(&relative)).expect("open");
                let reader = ::parquet::file::serialized_reader::SerializedFileReader::new(file)
                    .expect("a parquet file");
                let rows = reader.metadata().file_metadata().num_rows();
                (relative.display().to_string(), rows)
            })
            .collect()
    }

    #[tokio::test]
    async fn values_that_do_not_fit_are_rejected_and_the_rest_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = ParquetSink::open(&spec(dir.path(), Some("s")), format(), None)
            .await
            .expect("open");
        let rows = [
            vec![Value::Int(1), Value::str("a")],
            vec![Value::str("x"), Value::Null],
            vec![Value::Int(2), Value::Null],
            vec![Value::Null, Value::str("a")],
            vec![Value::Int(3), Value::Int(4)],
            vec![Value::Int(5), Value::str("a/b")],
            vec![Value::Int(6), Value::str("a")],
        ];
        let events: Vec<Event> = rows.into_iter().map(|row| Event::row(0, row)).collect();
        sink.write(&events).await.expect("write");
        let rejected = sink.take_rejected();
        let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "value of `n` does not fit its parquet column: string where int is expected",
                "value of `n` does not fit its parquet column: null where int is expected",
                "value of `s` does not fit its parquet column: int where string or null is expected",
            ]
        );
        assert_eq!(rejected[0].event, events[1]);
        assert!(sink.take_rejected().is_empty());
        // Nothing is published before the end of the run (or a checkpoint).
        assert!(published_rows(dir.path()).is_empty());
        sink.finish().await.expect("finish");
        assert_eq!(
            published_rows(dir.path()),
            [
                (
                    "s=__HIVE_DEFAULT_PARTITION__/part-00000000000000000001-000001.parquet".into(),
                    1
                ),
                ("s=a/part-00000000000000000001-000000.parquet".into(), 2),
                ("s=a%2Fb/part-00000000000000000001-000002.parquet".into(), 1),
            ]
        );
    }

    /// Past `MAX_OPEN_FILES` partitions in an interval, files are closed early and their
    /// partitions continue in new files: every row is published, each in its partition.
    #[tokio::test]
    async fn many_partitions_hold_at_most_max_open_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = ParquetSink::open(&spec(dir.path(), Some("s")), format(), None)
            .await
            .expect("open");
        let partitions = MAX_OPEN_FILES as i64 + 8;
        for round in 0..2_i64 {
            let events: Vec<Event> = (0..partitions)
                .map(|p| Event::row(0, vec![Value::Int(round), Value::str(&format!("p{p}"))]))
                .collect();
            for event in &events {
                sink.write(std::slice::from_ref(event))
                    .await
                    .expect("write");
                assert!(sink.open.len() <= MAX_OPEN_FILES);
            }
        }
        sink.prepare(1).await.expect("prepare");
        sink.commit(1).await.expect("commit");
        let published = published_rows(dir.path());
        let total: i64 = published.iter().map(|(_, rows)| rows).sum();
        assert_eq!(total, 2 * partitions);
        // Writing the partitions round robin, each file is closed before its partition comes
        // round again: one file per row.
        assert_eq!(published.len() as i64, 2 * partitions);
        for p in 0..partitions {
            let in_partition = published
                .iter()
                .filter(|(path, _)| path.starts_with(&format!("s=p{p}/")))
                .count();
            assert_eq!(in_partition, 2, "partition p{p}");
        }
    }

    #[tokio::test]
    async fn files_are_pending_until_their_checkpoint_is_saved() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = ParquetSink::open(&spec(dir.path(), None), format(), None)
            .await
            .expect("open");
        let event = Event::row(0, vec![Value::Int(1), Value::Null]);
        sink.write(std::slice::from_ref(&event))
            .await
            .expect("write");
        sink.prepare(1).await.expect("prepare");
        sink.write(&[event.clone(), event.clone(), event.clone()])
            .await
            .expect("write");
        sink.prepare(2).await.expect("prepare");
        assert!(published_rows(dir.path()).is_empty());
        assert!(dir.path().join(".pending-00000000000000000001").is_dir());
        sink.commit(1).await.expect("commit");
        assert_eq!(
            published_rows(dir.path()),
            [("part-00000000000000000001-000000.parquet".into(), 1)]
        );
        // A crash now, and a restore from checkpoint 1: checkpoint 2's files go; a restore from
        // 2 would publish them.
        drop(sink);
        let sink = ParquetSink::open(&spec(dir.path(), None), format(), Some(1)).await;
        drop(sink.expect("reopen"));
        assert_eq!(
            published_rows(dir.path()),
            [("part-00000000000000000001-000000.parquet".into(), 1)]
        );
        assert!(!dir.path().join(".pending-00000000000000000002").exists());
    }

    #[tokio::test]
    async fn a_restore_publishes_what_its_checkpoint_covers_and_deletes_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let write = |relative: &str| {
            let path = root.join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, relative).expect("write");
        };
        for file in [
            "k=1/part-00000000000000000001-000000.parquet",
            "k=1/part-00000000000000000004-000000.parquet",
            ".pending-00000000000000000002/k=2/part-000000.parquet.tmp",
            ".pending-00000000000000000003/k=1/part-000000.parquet.tmp",
            ".in-progress/k=3/part-000000.parquet.tmp",
            "k=1/notes.txt",
        ] {
            write(file);
        }
        recover(root, Some(2)).expect("recover");
        let mut left: Vec<String> = files_under(root, false)
            .expect("list")
            .into_iter()
            .map(|p| p.display().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "k=1/notes.txt",
                "k=1/part-00000000000000000001-000000.parquet",
                "k=2/part-00000000000000000002-000000.parquet",
            ]
        );
        let published =
            std::fs::read_to_string(root.join("k=2/part-00000000000000000002-000000.parquet"));
        assert_eq!(
            published.expect("read"),
            ".pending-00000000000000000002/k=2/part-000000.parquet.tmp"
        );
        recover(root, None).expect("recover");
        let left: Vec<PathBuf> = files_under(root, false).expect("list");
        assert_eq!(left, [PathBuf::from("k=1/notes.txt")]);
    }

    #[test]
    fn published_names_round_trip() {
        assert_eq!(published_id(&published_name(7, "000003")), Some(7));
        assert_eq!(published_id("part-000003.parquet"), None);
        assert_eq!(published_id("notes.parquet"), None);
        assert_eq!(pending_id(&pending_name(42)), Some(42));
    }
}

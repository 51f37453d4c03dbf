use thiserror::Error;

/// Everything that can go wrong while building schemas or decoding and encoding events.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EventError {
    /// A line is not valid JSON, or not a JSON object.
    #[error("line {line}: invalid JSON: {reason}")]
    InvalidJson { line: u64, reason: String },
    /// The event time field is absent.
    #[error("line {line}: missing event time field `{field}`")]
    MissingTime { line: u64, field: String },
    /// The event time field could not be read as RFC 3339 or epoch milliseconds.
    #[error("line {line}: field `{field}`: invalid timestamp {value}: expected RFC 3339 text or epoch milliseconds")]
    InvalidTime {
        line: u64,
        field: String,
        value: String,
    },
    /// A field declared in the schema holds a value of another type.
    #[error("line {line}: field `{field}`: expected {expected}, found {found}")]
    FieldType {
        line: u64,
        field: String,
        expected: &'static str,
        found: String,
    },
    /// A field declared in the schema as required is absent.
    #[error("line {line}: missing field `{field}` required by the schema")]
    MissingField { line: u64, field: String },
    /// A schema names the same field twice or names none.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// An unknown type name in a schema.
    #[error("unknown field type `{0}`: expected one of bool, int, float, string, timestamp, json")]
    UnknownType(String),
}

/// The result of event operations.
pub type Result<T, E = EventError> = std::result::Result<T, E>;

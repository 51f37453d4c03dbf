use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{EventError, Result};

/// The type of a schema field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `true` or `false`.
    Bool,
    /// A JSON integer that fits in `i64`.
    Int,
    /// Any JSON number, read as `f64`.
    Float,
    /// A JSON string.
    String,
    /// RFC 3339 text or epoch milliseconds, read as epoch milliseconds ([`crate::Value::Int`]).
    Timestamp,
    /// Any JSON value, kept as a generic [`crate::Value`].
    Json,
}

impl FieldType {
    /// The name used in configs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::String => "string",
            FieldType::Timestamp => "timestamp",
            FieldType::Json => "json",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FieldType {
    type Err = EventError;

    fn from_str(text: &str) -> Result<Self> {
        Ok(match text {
            "bool" | "boolean" => FieldType::Bool,
            "int" | "integer" | "long" => FieldType::Int,
            "float" | "double" | "number" => FieldType::Float,
            "string" | "str" => FieldType::String,
            "timestamp" | "time" => FieldType::Timestamp,
            "json" | "any" => FieldType::Json,
            other => return Err(EventError::UnknownType(other.to_string())),
        })
    }
}

/// One field of a [`Schema`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field's name in the JSON object.
    pub name: String,
    /// Its type.
    pub ty: FieldType,
    /// Whether it may be absent or `null` (written `type?` in configs).
    pub nullable: bool,
}

/// The fields of a row payload, in order. A field's index in the schema is its index in
/// [`crate::Payload::Row`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    fields: Vec<Field>,
    index: HashMap<String, usize>,
}

impl Schema {
    /// A schema of required fields.
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a str, FieldType)>) -> Result<Schema> {
        Schema::from_fields(fields.into_iter().map(|(name, ty)| Field {
            name: name.to_string(),
            ty,
            nullable: false,
        }))
    }

    /// A schema of the given fields; names must be unique.
    pub fn from_fields(fields: impl IntoIterator<Item = Field>) -> Result<Schema> {
        let fields: Vec<Field> = fields.into_iter().collect();
        let mut index = HashMap::with_capacity(fields.len());
        for (position, field) in fields.iter().enumerate() {
            if field.name.is_empty() {
                return Err(EventError::InvalidSchema(
                    "a field has an empty name".into(),
                ));
            }
            if index.insert(field.name.clone(), position).is_some() {
                return Err(EventError::InvalidSchema(format!(
                    "field `{}` is declared twice",
                    field.name
                )));
            }
        }
        Ok(Schema { fields, index })
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the schema has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The index of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The field at `index`.
    pub fn field(&self, index: usize) -> Option<&Field> {
        self.fields.get(index)
    }

    /// This schema with `field` appended, or with the field of the same name replaced.
    pub fn with_field(&self, field: Field) -> Schema {
        let mut fields = self.fields.clone();
        match self.index_of(&field.name) {
            Some(position) => fields[position] = field,
            None => fields.push(field),
        }
        let index = fields
            .iter()
            .enumerate()
            .map(|(position, field)| (field.name.clone(), position))
            .collect();
        Schema { fields, index }
    }
}

/// How the payloads of a stream are laid out, known when the pipeline is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every payload is a [`crate::Payload::Row`] of this schema.
    Row(Arc<Schema>),
    /// Every payload is a generic [`crate::Payload::Object`].
    Object,
}

impl Layout {
    /// The schema of a row layout.
    pub fn schema(&self) -> Option<&Arc<Schema>> {
        match self {
            Layout::Row(schema) => Some(schema),
            Layout::Object => None,
        }
    }
}

//! The JSON Lines codec: one JSON object a line in, one a line out.
//!
//! Decoding with a [`Schema`] reads only the fields the schema names (plus the time, type, id
//! and key fields), straight into typed [`Value`]s, and skips the rest without building them:
//! no JSON tree is allocated for a record. Without a schema, the payload is a generic object.
//!
//! Either way a line decodes only if it is one JSON object as serde_json reads it: what a schema
//! skips is still checked (UTF-8, escapes, numbers, literals), and lists and objects nest at
//! most [`MAX_NESTING`] levels deep. Epoch milliseconds must be whole
//! ([`crate::time::whole_millis`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use crate::time::{parse_text, write_rfc3339};
use crate::{Event, EventError, FieldType, Layout, Payload, Result, Schema, Value};

mod fast;

/// Which fields of a JSON object carry the event's metadata, and the payload's schema.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// The field holding the event time (RFC 3339 text or whole epoch milliseconds). `None`
    /// stamps each event with its processing time instead.
    pub time_field: Option<String>,
    /// The field holding the event's type, if any.
    pub type_field: Option<String>,
    /// The field holding the event's id, if any.
    pub id_field: Option<String>,
    /// A field whose value becomes the event's key (it also stays in the payload).
    pub key_field: Option<String>,
    /// The payload's schema; `None` keeps payloads as generic objects.
    pub schema: Option<Schema>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            time_field: Some("timestamp".into()),
            type_field: Some("type".into()),
            id_field: Some("id".into()),
            key_field: None,
            schema: None,
        }
    }
}

/// Decodes JSON Lines records into [`Event`]s.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    layout: Layout,
    /// Every name the decoder reacts to, with what it does with it. Linear search beats hashing
    /// for the handful of names a pipeline reads.
    slots: Vec<(String, Roles)>,
    /// The slots as the fast path looks them up.
    keys: Vec<fast::SlotKey>,
    /// The non-nullable schema fields among the first 64, as bits.
    required: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Roles {
    time: bool,
    kind: bool,
    id: bool,
    key: bool,
    field: Option<usize>,
}

impl Decoder {
    /// A decoder for `config`.
    pub fn new(config: DecoderConfig) -> Decoder {
        let mut slots: Vec<(String, Roles)> = Vec::new();
        let mut role = |name: &str, apply: &dyn Fn(&mut Roles)| match slots
            .iter_mut()
            .find(|(slot, _)| slot == name)
        {
            Some((_, roles)) => apply(roles),
            None => {
                let mut roles = Roles::default();
                apply(&mut roles);
                slots.push((name.to_string(), roles));
            }
        };
        if let Some(name) = &config.time_field {
            role(name, &|r| r.time = true);
        }
        if let Some(name) = &config.type_field {
            role(name, &|r| r.kind = true);
        }
        if let Some(name) = &config.id_field {
            role(name, &|r| r.id = true);
        }
        if let Some(name) = &config.key_field {
            role(name, &|r| r.key = true);
        }
        if let Some(schema) = &config.schema {
            for (index, field) in schema.fields().iter().enumerate() {
                role(&field.name, &|r| r.field = Some(index));
            }
        }
        let layout = match &config.schema {
            Some(schema) => Layout::Row(Arc::new(schema.clone())),
            None => Layout::Object,
        };
        let keys = slots
            .iter()
            .map(|(name, roles)| {
                fast::SlotKey::new(name, *roles, wanted_type(config.schema.as_ref(), *roles))
            })
            .collect();
        let required = config.schema.as_ref().map_or(0, |schema| {
            schema
                .fields()
                .iter()
                .take(64)
                .enumerate()
                .filter(|(_, field)| !field.nullable)
                .fold(0, |bits, (index, _)| bits | 1 << index)
        });
        Decoder {
            config,
            layout,
            slots,
            keys,
            required,
        }
    }

    /// The layout of the payloads this decoder produces.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes one line (without its newline). `line_number` (1-based) names the line in errors.
    /// The event's processing time is left at 0 for the caller to stamp.
    ///
    /// Flat records of plain values take a hand-written fast path; everything else, and every
    /// record that fails to decode, the serde path, which has the last word on results and
    /// errors alike.
    pub fn decode(&self, line: &[u8], line_number: u64) -> Result<Event> {
        match self.decode_fast(line, line_number) {
            Some(event) => Ok(event),
            None => self.decode_slow(line, line_number),
        }
    }

    /// [`Decoder::decode`] by serde_json alone.
    pub(crate) fn decode_slow(&self, line: &[u8], line_number: u64) -> Result<Event> {
        let mut deserializer = serde_json::Deserializer::from_slice(line);
        let mut problem = None;
        let visitor = RecordVisitor {
            decoder: self,
            line: line_number,
            problem: &mut problem,
        };
        let decoded = deserializer.deserialize_map(visitor);
        let event = match decoded {
            Ok(event) => event,
            Err(error) => {
                return Err(problem.unwrap_or_else(|| invalid_json(line_number, &error)));
            }
        };
        deserializer
            .end()
            .map_err(|error| invalid_json(line_number, &error))?;
        Ok(event)
    }

    fn roles(&self, name: &str) -> Option<Roles> {
        self.slots
            .iter()
            .find(|(slot, _)| slot == name)
            .map(|(_, roles)| *roles)
    }
}

/// How deep lists and objects may nest in a record, the record itself included: serde_json's
/// recursion limit (128) refuses the 128th level, and the fast path refuses what it refuses.
pub const MAX_NESTING: usize = 127;

/// serde_json's `error` on line `line` as an [`EventError::InvalidJson`]; a record nested too
/// deep says how deep it may be.
#[cold]
fn invalid_json(line: u64, error: &serde_json::Error) -> EventError {
    let message = error.to_string();
    let reason = if message.starts_with("recursion limit exceeded") {
        format!(
            "lists and objects nested deeper than {MAX_NESTING} levels at line {} column {}",
            error.line(),
            error.column()
        )
    } else {
        message
    };
    EventError::InvalidJson { line, reason }
}

struct RecordVisitor<'a> {
    decoder: &'a Decoder,
    line: u64,
    problem: &'a mut Option<EventError>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = Event;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Event, A::Error> {
        let decoder = self.decoder;
        let mut record = Record::new(decoder, self.line);
        while let Some(KeyName(name)) = map.next_key::<KeyName<'de>>()? {
            let Some(roles) = decoder.roles(&name) else {
                if decoder.config.schema.is_none() {
                    let value = map.next_value_seed(JsonValueSeed)?;
                    record.other(name.into_owned(), value);
                } else {
                    map.next_value::<Skipped>()?;
                }
                continue;
            };
            let scalar: Scalar<'de> = match record.wanted_type(roles) {
                Some(FieldType::Json) => Scalar::Value(map.next_value_seed(JsonValueSeed)?),
                _ => map.next_value::<Scalar<'de>>()?,
            };
            if let Err(problem) = record.field(name, roles, scalar) {
                return Err(fail_now(problem, self.problem));
            }
        }
        record
            .finish()
            .map_err(|problem| fail_now(problem, self.problem))
    }
}

/// An event being built from a record's fields, in the order they come: what the serde path
/// and the fast path share, so that they read fields (duplicates included) the same way.
struct Record<'a> {
    decoder: &'a Decoder,
    line: u64,
    id: Option<Arc<str>>,
    kind: Option<Arc<str>>,
    event_time: i64,
    key: Option<Value>,
    time_seen: bool,
    row: Vec<Value>,
    /// Which of the first 64 schema fields were read (as a non-null value).
    present: u64,
    object: BTreeMap<String, Value>,
}

impl<'a> Record<'a> {
    fn new(decoder: &'a Decoder, line: u64) -> Record<'a> {
        let row = match &decoder.config.schema {
            Some(schema) => vec![Value::Null; schema.len()],
            None => Vec::new(),
        };
        Record {
            decoder,
            line,
            id: None,
            kind: None,
            event_time: 0,
            key: None,
            time_seen: false,
            row,
            present: 0,
            object: BTreeMap::new(),
        }
    }

    /// The type a field with `roles` is read as: `Json` means a generic value (read with
    /// [`JsonValueSeed`] into [`Scalar::Value`]), anything else a [`Scalar`].
    fn wanted_type(&self, roles: Roles) -> Option<FieldType> {
        wanted_type(self.decoder.config.schema.as_ref(), roles)
    }

    /// A field no slot names, in a record without schema: kept in the payload.
    fn other(&mut self, name: String, value: Value) {
        self.object.insert(name, value);
    }

    /// A field with `roles`, read as [`Record::wanted_type`] says.
    #[inline(always)]
    fn field(&mut self, name: Cow<'_, str>, roles: Roles, scalar: Scalar<'_>) -> Result<()> {
        let line = self.line;
        let schema = self.decoder.config.schema.as_ref();
        if roles.time {
            match scalar.to_time() {
                Some(millis) => self.set_time(millis),
                None => {
                    return Err(EventError::InvalidTime {
                        line,
                        field: name.into_owned(),
                        value: scalar.describe(),
                    })
                }
            }
        }
        if roles.kind {
            self.kind = match &scalar {
                Scalar::Str(text) => Some(crate::intern::intern(text)),
                other => other.to_text(),
            };
        }
        if roles.id {
            self.id = scalar.to_text();
        }
        let needs_value = roles.key
            || roles.field.is_some()
            || (schema.is_none() && !(roles.time || roles.kind || roles.id));
        if !needs_value {
            return Ok(());
        }
        let value = match (roles.field, schema) {
            (Some(index), Some(schema)) => {
                let field = &schema.fields()[index];
                match scalar.into_typed(field.ty) {
                    Ok(value) => {
                        self.mark_present(index);
                        value
                    }
                    Err(found) => {
                        if found == "null" && field.nullable {
                            Value::Null
                        } else {
                            return Err(EventError::FieldType {
                                line,
                                field: name.into_owned(),
                                expected: field.ty.name(),
                                found,
                            });
                        }
                    }
                }
            }
            _ => scalar.into_value(),
        };
        if roles.key {
            self.key = Some(value.clone());
        }
        match (roles.field, schema) {
            (Some(index), Some(_)) => self.row[index] = value,
            _ if schema.is_none() => {
                self.object.insert(name.into_owned(), value);
            }
            _ => {}
        }
        Ok(())
    }

    /// The event time is `millis`.
    #[inline(always)]
    fn set_time(&mut self, millis: i64) {
        self.event_time = millis;
        self.time_seen = true;
    }

    /// Schema field `index` has a value of its type.
    #[inline(always)]
    fn mark_present(&mut self, index: usize) {
        if index < 64 {
            self.present |= 1 << index;
        }
    }

    /// The event, once every field is read.
    fn finish(self) -> Result<Event> {
        let config = &self.decoder.config;
        if let Some(field) = &config.time_field {
            if !self.time_seen {
                return Err(EventError::MissingTime {
                    line: self.line,
                    field: field.clone(),
                });
            }
        }
        let required = self.decoder.required;
        if let (Some(schema), true) = (&config.schema, self.present & required != required) {
            for (index, field) in schema.fields().iter().enumerate() {
                let seen = index >= 64 || self.present & (1 << index) != 0;
                if !seen && !field.nullable && self.row[index].is_null() {
                    return Err(EventError::MissingField {
                        line: self.line,
                        field: field.name.clone(),
                    });
                }
            }
        }
        let payload = match config.schema {
            Some(_) => Payload::Row(self.row),
            None => Payload::Object(self.object),
        };
        Ok(Event {
            id: self.id,
            kind: self.kind,
            event_time: self.event_time,
            processing_time: 0,
            headers: None,
            key: self.key,
            payload,
        })
    }
}

/// The type a field with `roles` is read as under `schema` (see [`Record::wanted_type`]).
fn wanted_type(schema: Option<&Schema>, roles: Roles) -> Option<FieldType> {
    match roles.field.and_then(|i| schema.and_then(|s| s.field(i))) {
        Some(field) => Some(field.ty),
        None if roles.key && schema.is_none() => Some(FieldType::Json),
        None => None,
    }
}

fn fail_now<E: de::Error>(problem: EventError, slot: &mut Option<EventError>) -> E {
    *slot = Some(problem);
    E::custom("schema mismatch")
}

/// An object key, borrowed from the input when it has no escapes. (`Cow<str>` itself always
/// deserializes to an owned string: an allocation per key and record.)
struct KeyName<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyName<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                v: &'de str,
            ) -> std::result::Result<Self::Value, E> {
                Ok(KeyName(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(KeyName(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(KeyName(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A JSON value read without committing to a type, so that type errors can name the field.
enum Scalar<'de> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'de, str>),
    /// A list or object where a scalar was expected (skipped, not built).
    Nested(&'static str),
    /// A value read generically (for `json` fields and schemaless keys).
    Value(Value),
}

impl Scalar<'_> {
    #[cold]
    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Nested(kind) => (*kind).into(),
            Scalar::Value(value) => value.to_json().to_string(),
        }
    }

    #[inline(always)]
    fn to_time(&self) -> Option<i64> {
        match self {
            Scalar::Int(i) => Some(*i),
            Scalar::Float(f) => crate::time::whole_millis(*f),
            Scalar::Str(s) => parse_text(s),
            _ => None,
        }
    }

    fn to_text(&self) -> Option<Arc<str>> {
        match self {
            Scalar::Str(s) => Some(Arc::from(s.as_ref())),
            Scalar::Null => None,
            other => Some(Arc::from(other.describe())),
        }
    }

    /// The value as `ty`, or the name of what was found instead.
    #[inline(always)]
    fn into_typed(self, ty: FieldType) -> std::result::Result<Value, String> {
        match (ty, self) {
            (FieldType::Bool, Scalar::Bool(b)) => Ok(Value::Bool(b)),
            (FieldType::Int, Scalar::Int(i)) => Ok(Value::Int(i)),
            (FieldType::Float, Scalar::Int(i)) => Ok(Value::Float(i as f64)),
            (FieldType::Float, Scalar::Float(f)) => Ok(Value::Float(f)),
            (FieldType::String, Scalar::Str(s)) => Ok(Value::Str(crate::intern::intern(&s))),
            (FieldType::Timestamp, scalar) => match scalar.to_time() {
                Some(millis) => Ok(Value::Int(millis)),
                None => Err(scalar.found()),
            },
            (FieldType::Json, scalar) => Ok(scalar.into_value()),
            (_, scalar) => Err(scalar.found()),
        }
    }

    #[cold]
    fn found(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => format!("bool {b}"),
            Scalar::Int(i) => format!("int {i}"),
            Scalar::Float(f) => format!("float {f}"),
            Scalar::Str(s) => format!("string {s:?}"),
            Scalar::Nested(kind) => (*kind).into(),
            Scalar::Value(value) => value.type_name().into(),
        }
    }

    #[inline(always)]
    fn into_value(self) -> Value {
        match self {
            Scalar::Null | Scalar::Nested(_) => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::Int(i),
            Scalar::Float(f) => Value::Float(f),
            Scalar::Str(s) => Value::str(&s),
            Scalar::Value(value) => value,
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Float(v as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Scalar::Nested("list"))
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Scalar::Nested("object"))
    }
}

/// A value read and dropped, but checked as serde_json checks what it builds: strings are valid
/// UTF-8 with valid escapes, numbers are in range, nesting is within the recursion limit.
/// (serde_json's `IgnoredAny` checks none of these.)
struct Skipped;

impl<'de> de::Deserialize<'de> for Skipped {
    fn deserialize<D: de::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Skipped, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Skipped, A::Error> {
        while map.next_entry::<Skipped, Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

/// Reads any JSON value into a [`Value`].
struct JsonValueSeed;

impl<'de> DeserializeSeed<'de> for JsonValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(JsonValueVisitor)
    }
}

struct JsonValueVisitor;

impl<'de> Visitor<'de> for JsonValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(v as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(JsonValueSeed)? {
            items.push(item);
        }
        Ok(Value::List(Arc::new(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.insert(key, map.next_value_seed(JsonValueSeed)?);
        }
        Ok(Value::Map(Arc::new(entries)))
    }
}

/// How timestamps are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2024-05-01T12:00:00.250Z`
    #[default]
    Rfc3339,
    /// `1714564800250`
    Millis,
}

/// Encodes events as JSON Lines: the metadata fields first, then the payload's fields in
/// schema (or key) order, so that output is deterministic byte for byte.
///
/// Every key is written once: a metadata field whose name the payload also has (a schema that
/// names `id`, say) is written only from the payload, with the payload's (the input's) type.
#[derive(Clone, Debug)]
pub struct Encoder {
    layout: Layout,
    /// How timestamps (the event time and `timestamp` fields) are written.
    time_format: TimeFormat,
    /// The names the event time, type and id are written under (`None`: not written).
    names: [Option<String>; 3],
    /// What of them is written before the payload, worked out once from `names`.
    metadata: Vec<(Metadata, String)>,
}

/// A field of an event's own, written before its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metadata {
    Time,
    Type,
    Id,
}

/// The metadata to write, in order (time, type, id), for `names`: without a type or id named
/// as the time (the time takes the name), and without a name a row schema has (the payload
/// writes that field itself, with its own type). Type and id may share a name: `encode` then
/// writes the first one present.
fn metadata_to_write(layout: &Layout, names: &[Option<String>; 3]) -> Vec<(Metadata, String)> {
    let time = names[0].as_deref();
    let fields = [Metadata::Time, Metadata::Type, Metadata::Id];
    fields
        .into_iter()
        .zip(names)
        .filter_map(|(field, name)| Some((field, name.as_deref()?)))
        .filter(|&(field, name)| field == Metadata::Time || time != Some(name))
        .filter(|&(_, name)| layout.schema().is_none_or(|s| s.index_of(name).is_none()))
        .map(|(field, name)| (field, name.to_string()))
        .collect()
}

impl Encoder {
    /// An encoder for payloads of `layout`, writing the event time as `timestamp` in RFC 3339
    /// and the type and id as `type` and `id`: the names [`DecoderConfig::default`] reads.
    pub fn new(layout: Layout) -> Encoder {
        Encoder::with_names(layout, Some("timestamp"), Some("type"), Some("id"))
    }

    /// An encoder for payloads of `layout` that writes the metadata under the names `config`
    /// reads it from, so that what it writes decodes back with `config`. Without a time field
    /// in `config` (events stamped with their processing time), the time is written as
    /// `timestamp`.
    pub fn for_decoder(layout: Layout, config: &DecoderConfig) -> Encoder {
        Encoder::with_names(
            layout,
            Some(config.time_field.as_deref().unwrap_or("timestamp")),
            config.type_field.as_deref(),
            config.id_field.as_deref(),
        )
    }

    /// An encoder writing the event time, type and id under these names (`None` leaves one
    /// out), in RFC 3339.
    fn with_names(
        layout: Layout,
        time: Option<&str>,
        kind: Option<&str>,
        id: Option<&str>,
    ) -> Encoder {
        let names = [time, kind, id].map(|name| name.map(str::to_string));
        let metadata = metadata_to_write(&layout, &names);
        Encoder {
            layout,
            time_format: TimeFormat::Rfc3339,
            names,
            metadata,
        }
    }

    /// The same encoder, writing timestamps in `format`.
    pub fn with_time_format(mut self, format: TimeFormat) -> Encoder {
        self.time_format = format;
        self
    }

    /// The same encoder, without the event time (window results carry their bounds as
    /// payload fields instead).
    pub fn without_time(mut self) -> Encoder {
        self.names[0] = None;
        self.metadata = metadata_to_write(&self.layout, &self.names);
        self
    }

    /// Appends `event` as one line, newline included, to `out`.
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) {
        let mut first = true;
        out.push(b'{');
        // An object payload may have any field: one it has speaks for itself.
        let object = match &event.payload {
            Payload::Object(map) => Some(map),
            Payload::Row(_) => None,
        };
        let mut type_name: Option<&str> = None;
        for (field, name) in &self.metadata {
            let text = match field {
                Metadata::Time => None,
                Metadata::Type => event.kind.as_deref(),
                Metadata::Id => event.id.as_deref(),
            };
            if *field != Metadata::Time && text.is_none() {
                continue;
            }
            if *field == Metadata::Type {
                type_name = Some(name);
            } else if *field == Metadata::Id && type_name == Some(name.as_str()) {
                continue;
            }
            if object.is_some_and(|map| map.contains_key(name.as_str())) {
                continue;
            }
            write_name(out, name, &mut first);
            match text {
                Some(text) => write_str(out, text),
                None => self.write_time(event.event_time, out),
            }
        }
        match (&event.payload, &self.layout) {
            (Payload::Row(values), Layout::Row(schema)) => {
                for (field, value) in schema.fields().iter().zip(values) {
                    write_name(out, &field.name, &mut first);
                    if field.ty == FieldType::Timestamp {
                        if let Value::Int(millis) = value {
                            self.write_time(*millis, out);
                            continue;
                        }
                    }
                    write_value(out, value);
                }
            }
            (Payload::Object(map), _) => {
                for (name, value) in map {
                    write_name(out, name, &mut first);
                    write_value(out, value);
                }
            }
            (Payload::Row(values), Layout::Object) => {
                // A row without its schema: write it under positional names rather than lose it.
                for (index, value) in values.iter().enumerate() {
                    write_name(out, &format!("_{index}"), &mut first);
                    write_value(out, value);
                }
            }
        }
        out.extend_from_slice(b"}\n");
    }

    fn write_time(&self, millis: i64, out: &mut Vec<u8>) {
        match self.time_format {
            TimeFormat::Millis => {
                out.extend_from_slice(itoa::Buffer::new().format(millis).as_bytes())
            }
            TimeFormat::Rfc3339 => {
                // The text never needs escaping.
                out.push(b'"');
                write_rfc3339(millis, out);
                out.push(b'"');
            }
        }
    }
}

fn write_name(out: &mut Vec<u8>, name: &str, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_str(out, name);
    out.push(b':');
}

/// Writes `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let needs_escape = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if needs_escape {
        // serde_json's writer escapes exactly as JSON requires; writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Writes `value` as JSON. Non-finite floats are written as `null`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Str(s) => write_str(out, s),
        Value::List(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Map(map) => {
            out.push(b'{');
            let mut first = true;
            for (name, item) in map.iter() {
                write_name(out, name, &mut first);
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Splits a buffer into lines (without their `\n` or `\r\n`), yielding each with its offset.
pub fn split_lines(buffer: &[u8]) -> impl Iterator<Item = &[u8]> {
    buffer
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;

    fn typed_decoder() -> Decoder {
        let schema = Schema::from_fields([
            Field {
                name: "user".into(),
                ty: FieldType::String,
                nullable: false,
            },
            Field {
                name: "n".into(),
                ty: FieldType::Int,
                nullable: false,
            },
            Field {
                name: "score".into(),
                ty: FieldType::Float,
                nullable: true,
            },
        ])
        .expect("valid schema");
        Decoder::new(DecoderConfig {
            schema: Some(schema),
            key_field: Some("user".into()),
            ..DecoderConfig::default()
        })
    }

    #[test]
    fn typed_decode_reads_only_schema_fields() {
        let event = typed_decoder()
            .decode(br#"{"timestamp":"2024-05-01T12:00:00Z","type":"click","user":"u\"1","n":7,"big":{"a":[1,2]}}"#, 1)
            .expect("valid record");
        assert_eq!(event.event_time, 1_714_564_800_000);
        assert_eq!(event.kind.as_deref(), Some("click"));
        assert_eq!(event.key, Some(Value::str("u\"1")));
        assert_eq!(
            event.payload,
            Payload::Row(vec![Value::str("u\"1"), Value::Int(7), Value::Null])
        );
    }

    #[test]
    fn typed_decode_names_line_and_field() {
        let decoder = typed_decoder();
        let cases: [(&[u8], &str); 6] = [
            (br#"{"timestamp":1,"user":"a","n":"x"}"#, "line 3: field `n`: expected int, found string \"x\""),
            (br#"{"timestamp":1,"user":"a"}"#, "line 3: missing field `n` required by the schema"),
            (br#"{"user":"a","n":1}"#, "line 3: missing event time field `timestamp`"),
            (br#"{"timestamp":"soon","user":"a","n":1}"#, "line 3: field `timestamp`: invalid timestamp \"soon\": expected RFC 3339 text or epoch milliseconds"),
            (br#"{"timestamp":1,"user":"a","n":1"#, "line 3: invalid JSON: EOF while parsing an object at line 1 column 31"),
            (br#"[1,2]"#, "line 3: invalid JSON: invalid type: sequence, expected a JSON object at line 1 column 0"),
        ];
        for (line, expected) in cases {
            let error = decoder.decode(line, 3).expect_err("must be refused");
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn generic_decode_keeps_every_field_and_encodes_back() {
        let decoder = Decoder::new(DecoderConfig::default());
        let line = br#"{"timestamp":1714564800250,"id":"e1","b":[1,2.5,"x"],"a":{"z":null}}"#;
        let event = decoder.decode(line, 1).expect("valid record");
        let mut out = Vec::new();
        Encoder::new(decoder.layout().clone()).encode(&event, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"timestamp\":\"2024-05-01T12:00:00.250Z\",\"id\":\"e1\",\"a\":{\"z\":null},\"b\":[1,2.5,\"x\"]}\n"
        );
    }

    fn encode(encoder: &Encoder, event: &Event) -> String {
        let mut out = Vec::new();
        encoder.encode(event, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_metadata_field_the_schema_names_is_written_once_with_its_type() {
        let schema = Schema::new([("id", FieldType::Int), ("type", FieldType::String)])
            .expect("valid schema");
        let decoder = Decoder::new(DecoderConfig {
            schema: Some(schema),
            ..DecoderConfig::default()
        });
        for line in [
            &br#"{"timestamp":1714564800250,"id":4,"type":"click"}"#[..],
            br#"{"type":"click","timestamp":"2024-05-01T12:00:00.250Z","id":4}"#,
        ] {
            let event = decoder.decode(line, 1).expect("valid record");
            assert_eq!(event.id.as_deref(), Some("4"));
            let encoder = Encoder::for_decoder(decoder.layout().clone(), decoder.config());
            assert_eq!(
                encode(&encoder, &event),
                "{\"timestamp\":\"2024-05-01T12:00:00.250Z\",\"id\":4,\"type\":\"click\"}\n"
            );
        }
    }

    #[test]
    fn metadata_is_written_under_the_decoder_names_and_decodes_back() {
        let config = DecoderConfig {
            time_field: Some("ts".into()),
            type_field: Some("kind".into()),
            id_field: Some("event_id".into()),
            ..DecoderConfig::default()
        };
        let decoder = Decoder::new(config);
        let line = br#"{"ts":1714564800250,"kind":"click","event_id":"e1","n":2}"#;
        let event = decoder.decode(line, 1).expect("valid record");
        let encoder = Encoder::for_decoder(decoder.layout().clone(), decoder.config())
            .with_time_format(TimeFormat::Millis);
        let text = encode(&encoder, &event);
        assert_eq!(
            text,
            "{\"ts\":1714564800250,\"kind\":\"click\",\"event_id\":\"e1\",\"n\":2}\n"
        );
        let again = decoder
            .decode(text.trim_end().as_bytes(), 1)
            .expect("decodes back");
        assert_eq!(again, event);
    }

    #[test]
    fn a_metadata_name_shared_by_two_roles_or_the_payload_is_written_once() {
        let mut fields = BTreeMap::new();
        fields.insert("timestamp".to_string(), Value::Int(7));
        fields.insert("type".to_string(), Value::str("payload"));
        let event = Event {
            id: Some("e1".into()),
            kind: Some("click".into()),
            ..Event::object(1, fields)
        };
        let encoder = Encoder::with_names(
            Layout::Object,
            Some("timestamp"),
            Some("type"),
            Some("type"),
        );
        assert_eq!(
            encode(&encoder, &event),
            "{\"timestamp\":7,\"type\":\"payload\"}\n"
        );
        let encoder = Encoder::with_names(
            Layout::Object,
            Some("timestamp"),
            Some("kind"),
            Some("kind"),
        );
        assert_eq!(
            encode(&encoder, &event),
            "{\"kind\":\"click\",\"timestamp\":7,\"type\":\"payload\"}\n"
        );
    }
}

//! Connector settings as written in a config, and the problems found in them.
//!
//! The pipeline's config reader parses the keys common to every source or sink (`name`,
//! `type`, `format`, `watermark`, `rate_limit`, `time_format`) and hands each connector the
//! rest as [`Settings`]: the keys with their places and untyped values. A connector takes the
//! keys it knows with the typed getters, which report a wrong type at the key's place;
//! [`Settings::finish`] then reports every key no one took. Problems are collected, never
//! raised one at a time, so a config lists all of them.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a setting was written, so that problems can name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// The path of the setting in the config (`steps[2].filter`).
    pub path: String,
    /// 1-based line in the config file; 0 when the setting did not come from a file.
    pub line: u64,
    /// 1-based column in the config file; 0 when unknown.
    pub column: u64,
}

impl Place {
    /// A place known only by its path (pipelines built in code).
    pub fn path(path: impl Into<String>) -> Place {
        Place {
            path: path.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}:{}: {}", self.line, self.column, self.path)
        } else {
            f.write_str(&self.path)
        }
    }
}

/// One problem found while checking a pipeline, with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub place: Place,
    /// What is wrong, as a sentence fragment without a final period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// A value as written in a config, before a connector gives it a type.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    /// `null` or `~`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Text.
    Str(String),
    /// A sequence.
    Seq(Vec<SettingValue>),
    /// A mapping, in written order.
    Map(Vec<(String, SettingValue)>),
}

impl SettingValue {
    /// What the value is, for a problem: scalars as written, others by their kind.
    fn describe(&self) -> String {
        match self {
            SettingValue::Null => "null".into(),
            SettingValue::Bool(b) => b.to_string(),
            SettingValue::Int(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Str(text) => format!("the string `{text}`"),
            SettingValue::Seq(_) => "a sequence".into(),
            SettingValue::Map(_) => "a mapping".into(),
        }
    }
}

/// One connector-specific key as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// Where its value was written (its path is the setting's: `sources[0].path`, once it is
    /// part of [`Settings`]).
    pub place: Place,
    /// The value.
    pub value: SettingValue,
}

/// The connector-specific settings of one source or sink, and where to report problems.
#[derive(Debug)]
pub struct Settings<'a> {
    kind: &'static str,
    type_name: String,
    place: Place,
    base: &'a Path,
    settings: Vec<Setting>,
    problems: &'a mut Vec<Problem>,
}

impl<'a> Settings<'a> {
    /// The settings of a `kind` (`source` or `sink`) of type `type_name` written at `place`
    /// (each setting's path is taken to be under it: `sources[0].path`); relative paths are
    /// taken from `base`; problems go to `problems`.
    pub fn new(
        kind: &'static str,
        type_name: &str,
        place: Place,
        base: &'a Path,
        mut settings: Vec<Setting>,
        problems: &'a mut Vec<Problem>,
    ) -> Settings<'a> {
        for setting in &mut settings {
            setting.place.path = format!("{}.{}", place.path, setting.key);
        }
        Settings {
            kind,
            type_name: type_name.to_string(),
            place,
            base,
            settings,
            problems,
        }
    }

    /// What these are the settings of: `source` or `sink`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The type named: `file`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Where the source or sink itself was written.
    pub fn place(&self) -> Place {
        self.place.clone()
    }

    /// Reports a problem at `place`.
    pub fn problem(&mut self, place: Place, message: impl Into<String>) {
        self.problems.push(Problem {
            place,
            message: message.into(),
        });
    }

    /// Takes `key`, if written.
    pub fn take(&mut self, key: &str) -> Option<Setting> {
        let index = self.settings.iter().position(|s| s.key == key)?;
        Some(self.settings.remove(index))
    }

    fn wrong_type(&mut self, setting: &Setting, expected: &str) {
        let message = format!(
            "`{}` must be {expected}, not {}",
            setting.key,
            setting.value.describe()
        );
        self.problem(setting.place.clone(), message);
    }

    /// Takes `key` as text, with its place.
    pub fn string(&mut self, key: &str) -> Option<(String, Place)> {
        let setting = self.take(key)?;
        match &setting.value {
            SettingValue::Str(text) => Some((text.clone(), setting.place)),
            _ => {
                self.wrong_type(&setting, "a string");
                None
            }
        }
    }

    /// Takes `key` as a path, relative to the config's directory.
    pub fn path(&mut self, key: &str) -> Option<PathBuf> {
        self.string(key).map(|(text, _)| self.resolve(&text))
    }

    /// Takes `key` as a sequence of paths.
    pub fn paths(&mut self, key: &str) -> Vec<PathBuf> {
        let Some(setting) = self.take(key) else {
            return Vec::new();
        };
        match &setting.value {
            SettingValue::Seq(items) => {
                let mut paths = Vec::new();
                for item in items {
                    match item {
                        SettingValue::Str(text) => paths.push(self.resolve(text)),
                        _ => {
                            self.wrong_type(&setting, "a sequence of paths");
                            return Vec::new();
                        }
                    }
                }
                paths
            }
            _ => {
                self.wrong_type(&setting, "a sequence of paths");
                Vec::new()
            }
        }
    }

    fn resolve(&self, written: &str) -> PathBuf {
        let path = PathBuf::from(written);
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    /// Takes `key` as a boolean.
    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let setting = self.take(key)?;
        match setting.value {
            SettingValue::Bool(value) => Some(value),
            _ => {
                self.wrong_type(&setting, "true or false");
                None
            }
        }
    }

    /// Takes `key` as a non-negative whole number, with its place.
    pub fn u64(&mut self, key: &str) -> Option<(u64, Place)> {
        let setting = self.take(key)?;
        match setting.value {
            SettingValue::Int(value) if value >= 0 => Some((value as u64, setting.place)),
            _ => {
                self.wrong_type(&setting, "a non-negative integer");
                None
            }
        }
    }

    /// Takes `key` as a duration in milliseconds (`250ms`, `5s`, `1m 30s`, or a number of
    /// milliseconds).
    pub fn duration(&mut self, key: &str) -> Option<i64> {
        let setting = self.take(key)?;
        let text = match &setting.value {
            SettingValue::Str(text) => text.clone(),
            SettingValue::Int(millis) => format!("{millis}ms"),
            _ => {
                self.wrong_type(&setting, "a duration such as `5s`, `250ms` or `1m`");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(millis) => Some(millis),
            Err(message) => {
                self.problem(setting.place, message);
                None
            }
        }
    }

    /// Reports every key no getter took: it does not apply to this type.
    pub fn finish(self) {
        for setting in self.settings {
            self.problems.push(Problem {
                place: setting.place,
                message: format!(
                    "`{}` does not apply to a {} {}",
                    setting.key, self.type_name, self.kind
                ),
            });
        }
    }
}

/// Parses a duration as written (`250ms`, `5s`, `1m 30s`) into milliseconds, or says what is
/// wrong with it.
pub fn parse_duration(written: &str) -> Result<i64, String> {
    let written = written.trim();
    if written.starts_with('-') {
        return Err(format!(
            "invalid duration `{written}`: durations cannot be negative"
        ));
    }
    match humantime::parse_duration(written) {
        Ok(duration) => i64::try_from(duration.as_millis())
            .map_err(|_| format!("duration `{written}` is too large")),
        Err(error) => Err(format!(
            "invalid duration `{written}`: {error} (write e.g. `500ms`, `5s`, `1m`)"
        )),
    }
}

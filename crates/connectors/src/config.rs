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

    /// Takes `key` as a path, relative to the config's directory, used as `usage` says: a path
    /// that cannot be is reported at the key's place (and still returned, so that no other
    /// problem says it is missing).
    pub fn path(&mut self, key: &str, usage: PathUse) -> Option<PathBuf> {
        let (text, place) = self.string(key)?;
        let path = self.resolve(&text);
        self.check_path(&place, &path, usage);
        Some(path)
    }

    /// Takes `key` as a sequence of paths, each used as `usage` says and checked as
    /// [`path`](Self::path) checks one.
    pub fn paths(&mut self, key: &str, usage: PathUse) -> Vec<PathBuf> {
        let Some(setting) = self.take(key) else {
            return Vec::new();
        };
        let texts: Option<Vec<&str>> = match &setting.value {
            SettingValue::Seq(items) => items
                .iter()
                .map(|item| match item {
                    SettingValue::Str(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        let Some(texts) = texts else {
            self.wrong_type(&setting, "a sequence of paths");
            return Vec::new();
        };
        let paths: Vec<PathBuf> = texts.iter().map(|text| self.resolve(text)).collect();
        for path in &paths {
            self.check_path(&setting.place, path, usage);
        }
        paths
    }

    /// Reports at `place` why `path` cannot be used as `usage` says, if it cannot.
    fn check_path(&mut self, place: &Place, path: &Path, usage: PathUse) {
        if let Err(message) = check_path(path, usage) {
            self.problem(place.clone(), message);
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

/// What a connector (or the pipeline) does with a path, so that validation can check, before
/// anything starts and without creating or opening anything, that it will be able to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathUse {
    /// An input read from its start: it must exist and be a regular file, a FIFO or a
    /// character device (`/dev/stdin`) that the process may read. A directory, a socket or a
    /// block device is refused.
    Read,
    /// A file written, created with its missing directories: either it exists, is not a
    /// directory, and the process may write it; or it does not exist and its nearest existing
    /// ancestor is a directory the process may create entries in.
    WriteFile,
    /// A directory written in, created with its missing parents: either it exists, is a
    /// directory, and the process may create entries in it; or it does not exist and its
    /// nearest existing ancestor is such a directory.
    WriteDir,
}

/// Checks that `path` can be used as `usage` says, looking only at metadata and asking the
/// system whether the process may read or write (access(2) with the effective ids, so read-only
/// mounts count, and root may write where the permission bits say no one may). Says why not,
/// naming the path and giving the system's cause once.
pub fn check_path(path: &Path, usage: PathUse) -> std::result::Result<(), String> {
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if usage != PathUse::Read && is_missing(&error) => {
            return creatable(path);
        }
        Err(error) if usage == PathUse::Read => {
            return Err(format!("cannot read {shown}: {error}"))
        }
        Err(error) => return Err(format!("cannot inspect {shown}: {error}")),
    };
    match usage {
        PathUse::Read => {
            if metadata.is_dir() {
                return Err(format!("{shown} is a directory, not a file"));
            }
            if !is_readable_kind(&metadata) {
                return Err(format!(
                    "{shown} is not a regular file, a FIFO or a character device"
                ));
            }
            may(path, Permission::Read).map_err(|error| format!("cannot read {shown}: {error}"))
        }
        PathUse::WriteFile => {
            if metadata.is_dir() {
                return Err(format!("{shown} is a directory, not a file"));
            }
            may(path, Permission::Write).map_err(|error| format!("cannot write {shown}: {error}"))
        }
        PathUse::WriteDir => {
            if !metadata.is_dir() {
                return Err(format!("{shown} is not a directory"));
            }
            may(path, Permission::CreateIn)
                .map_err(|error| format!("cannot write in {shown}: {error}"))
        }
    }
}

/// Whether `error` says a path does not exist: it, or one of its ancestors, is missing, or an
/// ancestor is not a directory (the nearest existing ancestor then says what it is).
fn is_missing(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Whether a missing `path` can be created: its nearest existing ancestor must be a directory
/// the process may create entries in.
fn creatable(path: &Path) -> std::result::Result<(), String> {
    let shown = path.display();
    for ancestor in path.ancestors().skip(1) {
        // The ancestor of a relative path with one component is the empty path: the current
        // directory.
        let ancestor = if ancestor.as_os_str().is_empty() {
            Path::new(".")
        } else {
            ancestor
        };
        match std::fs::metadata(ancestor) {
            Ok(metadata) if metadata.is_dir() => {
                return may(ancestor, Permission::CreateIn).map_err(|error| {
                    format!(
                        "cannot create {shown}: cannot write in {}: {error}",
                        ancestor.display()
                    )
                });
            }
            Ok(_) => {
                return Err(format!(
                    "cannot create {shown}: {} is not a directory",
                    ancestor.display()
                ))
            }
            Err(error) if is_missing(&error) => continue,
            Err(error) => {
                return Err(format!(
                    "cannot create {shown}: cannot inspect {}: {error}",
                    ancestor.display()
                ))
            }
        }
    }
    Ok(())
}

/// What the process must be allowed to do with a path.
#[derive(Clone, Copy, Debug)]
enum Permission {
    Read,
    Write,
    /// Create entries in a directory: write and search it.
    CreateIn,
}

#[cfg(unix)]
fn may(path: &Path, permission: Permission) -> std::io::Result<()> {
    use rustix::fs::{accessat, Access, AtFlags, CWD};
    let access = match permission {
        Permission::Read => Access::READ_OK,
        Permission::Write => Access::WRITE_OK,
        Permission::CreateIn => Access::WRITE_OK | Access::EXEC_OK,
    };
    accessat(CWD, path, access, AtFlags::EACCESS).map_err(std::io::Error::from)
}

/// Without access(2), a path whose permissions let no one write it is refused.
#[cfg(not(unix))]
fn may(path: &Path, permission: Permission) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    match permission {
        Permission::Read => Ok(()),
        Permission::Write | Permission::CreateIn if metadata.permissions().readonly() => Err(
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only"),
        ),
        Permission::Write | Permission::CreateIn => Ok(()),
    }
}

#[cfg(unix)]
fn is_readable_kind(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    kind.is_file() || kind.is_fifo() || kind.is_char_device()
}

#[cfg(not(unix))]
fn is_readable_kind(metadata: &std::fs::Metadata) -> bool {
    metadata.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relative path of one component has the current directory as its nearest ancestor.
    #[test]
    fn relative_paths_are_checked_from_the_current_directory() {
        let missing = Path::new("surely-not-here-dir");
        assert_eq!(check_path(missing, PathUse::WriteDir), Ok(()));
        assert_eq!(
            check_path(&missing.join("x.jsonl"), PathUse::WriteFile),
            Ok(())
        );
        assert!(!missing.exists(), "checking created the directory");
        assert_eq!(
            check_path(missing, PathUse::Read),
            Err("cannot read surely-not-here-dir: No such file or directory (os error 2)".into())
        );
    }

    #[test]
    fn the_kind_of_an_existing_path_must_fit_its_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("f");
        std::fs::write(&file, "").expect("write file");
        assert_eq!(check_path(&file, PathUse::Read), Ok(()));
        assert_eq!(check_path(&file, PathUse::WriteFile), Ok(()));
        assert_eq!(
            check_path(&file, PathUse::WriteDir),
            Err(format!("{} is not a directory", file.display()))
        );
        for usage in [PathUse::Read, PathUse::WriteFile] {
            assert_eq!(
                check_path(dir.path(), usage),
                Err(format!(
                    "{} is a directory, not a file",
                    dir.path().display()
                ))
            );
        }
        assert_eq!(check_path(dir.path(), PathUse::WriteDir), Ok(()));
        assert_eq!(
            check_path(&file.join("a/b"), PathUse::WriteDir),
            Err(format!(
                "cannot create {}: {} is not a directory",
                file.join("a/b").display(),
                file.display()
            ))
        );
        assert_eq!(
            check_path(&file.join("a"), PathUse::Read),
            Err(format!(
                "cannot read {}: Not a directory (os error 20)",
                file.join("a").display()
            ))
        );
    }
}

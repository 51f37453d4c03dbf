//! The fast path of [`Decoder::decode`]: a hand-written scanner for the common record, a flat
//! JSON object of strings without escapes, numbers, booleans and nulls.
//!
//! It reads fields into the same [`Record`] as the serde path, so both treat fields
//! (duplicates included) alike. It is a strict subset of serde_json's grammar: whatever it is
//! not sure of (a backslash or control character in a string it reads, a nested value it
//! reads, invalid UTF-8, a number it cannot convert exactly as serde_json does, any unexpected
//! byte) and every record that fails to decode makes it give up, and the serde path decides,
//! with its own errors.
//!
//! Fields it does not read (with a schema) it skips, lists and objects and escaped strings
//! included, but it checks what it skips as serde_json checks what it reads: the whole line is
//! UTF-8, strings have valid escapes and no raw control characters, numbers follow the JSON
//! grammar and are in `f64`'s range, literals are whole, and lists and objects nest at most
//! [`MAX_NESTING`] deep, the record included. Anything else (a lone surrogate escape too) makes
//! it give up.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Decoder, Record, Roles, Scalar, MAX_NESTING};
use crate::time::parse_text;
use crate::{Event, FieldType, Value};

impl Decoder {
    /// Decodes `line` if it is a record the fast path handles and that decodes without error;
    /// `None` leaves it to [`Decoder::decode_slow`].
    pub(super) fn decode_fast(&self, line: &[u8], line_number: u64) -> Option<Event> {
        // The whole line is UTF-8 (checked at once, which is cheaper than string by string), so
        // every string between two quotes is too.
        let text = std::str::from_utf8(line).ok()?;
        let mut scan = Scanner {
            text,
            bytes: line,
            at: 0,
        };
        let mut record = Record::new(self, line_number);
        let schemaless = self.config.schema.is_none();

        scan.skip_whitespace();
        if !scan.eat(b'{') {
            return None;
        }
        scan.skip_whitespace();
        if !scan.eat(b'}') {
            loop {
                if !scan.eat(b'"') {
                    return None;
                }
                let start = scan.at;
                let slot = self.slot_at(line, start);
                let end = match slot {
                    Some(slot) => start + slot.len,
                    None => closing_quote(line, start)?,
                };
                scan.at = end + 1;
                scan.skip_whitespace();
                if !scan.eat(b':') {
                    return None;
                }
                scan.skip_whitespace();
                match slot {
                    Some(slot) if scan.lane(&mut record, slot.lane)? => {}
                    Some(slot) => {
                        // The key is the slot's name, byte for byte.
                        let scalar = match slot.wanted {
                            Some(FieldType::Json) => Scalar::Value(scan.scalar()?.into_value()),
                            _ => scan.scalar()?,
                        };
                        record
                            .field(Cow::Borrowed(&slot.name), slot.roles, scalar)
                            .ok()?;
                    }
                    None if schemaless => {
                        let name = text.get(start..end)?;
                        let value = scan.scalar()?.into_value();
                        record.other(name.to_string(), value);
                    }
                    None => scan.skip_value()?,
                }
                scan.skip_whitespace();
                match scan.next()? {
                    b',' => scan.skip_whitespace(),
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        scan.skip_whitespace();
        if scan.at != line.len() {
            return None;
        }
        record.finish().ok()
    }

    /// The slot of the field whose name starts at `line[start]` (after its opening quote), if
    /// any: the slot whose name comes next, followed by a quote. (A plain slot name has no
    /// quote, backslash or control character, so the name is then the whole key; a raw key
    /// never equals another name.)
    #[inline(always)]
    fn slot_at(&self, line: &[u8], start: usize) -> Option<&SlotKey> {
        let word = head(line, start, 8);
        self.keys.iter().find(|key| {
            key.plain
                && word & key.mask == key.head
                && line.get(start + key.len) == Some(&b'"')
                && (key.len <= 8
                    || line.get(start + 8..start + key.len) == key.name.as_bytes().get(8..))
        })
    }
}

/// A slot as the fast path looks it up: by its name's first eight bytes as a word, then the
/// rest.
#[derive(Clone, Debug)]
pub(super) struct SlotKey {
    len: usize,
    /// The first eight bytes of the name (zero-padded) as a little-endian word, and the mask of
    /// the bytes that belong to the name.
    head: u64,
    mask: u64,
    /// Whether the name can be written as a JSON string without escapes.
    plain: bool,
    name: String,
    roles: Roles,
    /// What a value of this slot is read as ([`Record::wanted_type`]).
    wanted: Option<FieldType>,
    lane: Lane,
}

/// A shortcut for the commonest slots, which [`Scanner::lane`] takes when the value has the
/// expected kind: it does what [`Record::field`] does then, without building a [`Scalar`].
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lane {
    /// No shortcut.
    General,
    /// Only the `int` schema field of this index (an integer that fits `i64` goes in the row).
    Int(usize),
    /// Only the time field (a string is read by `parse_text`).
    Time,
    /// Only the type field (a string becomes the type).
    Kind,
    /// Only the id field (a string becomes the id).
    Id,
}

impl SlotKey {
    pub(super) fn new(name: &str, roles: Roles, wanted: Option<FieldType>) -> SlotKey {
        let len = name.len();
        SlotKey {
            len,
            head: head(name.as_bytes(), 0, len),
            mask: if len >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * len)) - 1
            },
            plain: !name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
            name: name.to_string(),
            roles,
            wanted,
            lane: Lane::of(roles, wanted),
        }
    }
}

impl Lane {
    fn of(roles: Roles, wanted: Option<FieldType>) -> Lane {
        let Roles {
            time,
            kind,
            id,
            key,
            field,
        } = roles;
        match (time, kind, id, key, field, wanted) {
            (false, false, false, false, Some(index), Some(FieldType::Int)) => Lane::Int(index),
            (true, false, false, false, None, None) => Lane::Time,
            (false, true, false, false, None, None) => Lane::Kind,
            (false, false, true, false, None, None) => Lane::Id,
            _ => Lane::General,
        }
    }
}

/// The first eight bytes (or fewer, zero-padded) of `bytes[start..start + len]` as a
/// little-endian word.
#[inline(always)]
fn head(bytes: &[u8], start: usize, len: usize) -> u64 {
    match bytes.get(start..start + 8) {
        Some(chunk) => {
            let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
            if len >= 8 {
                word
            } else {
                word & ((1u64 << (8 * len)) - 1)
            }
        }
        None => {
            let mut word = [0u8; 8];
            for (index, byte) in bytes.iter().skip(start).take(len.min(8)).enumerate() {
                word[index] = *byte;
            }
            u64::from_le_bytes(word)
        }
    }
}

/// A cursor over one line.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// The index of the first `"` from `start` on, if no backslash or control character comes
/// before it. Eight bytes at a time (see [`specials`]).
#[inline]
fn closing_quote(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let special = specials(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?));
        if special != 0 {
            let index = at + (special.trailing_zeros() / 8) as usize;
            return (*bytes.get(index)? == b'"').then_some(index);
        }
        at += 8;
    }
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at),
            b'\\' | 0..=0x1f => return None,
            _ => at += 1,
        }
    }
}

/// The index of the first quote, backslash or control character from `start` on, eight bytes
/// at a time (see [`specials`]).
#[inline]
fn special(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let special = specials(u64::from_le_bytes(<[u8; 8]>::try_from(chunk).ok()?));
        if special != 0 {
            return Some(at + (special.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    loop {
        match *bytes.get(at)? {
            b'"' | b'\\' | 0..=0x1f => return Some(at),
            _ => at += 1,
        }
    }
}

/// A word with a byte's high bit set where `word` has a quote, a backslash or a byte below
/// 0x20 (the lowest such flag is always right; flags above it may be spurious, from the
/// borrow).
#[inline(always)]
fn specials(word: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (word.wrapping_sub(ONES * 0x20) & !word))
        & HIGH
}

/// Exact powers of ten as `f64` (10^22 is the largest).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A JSON number as scanned: its digits as an integer (`significand`, unless it overflowed
/// `u64`) times ten to `exponent`.
struct Number {
    negative: bool,
    significand: u64,
    overflow: bool,
    exponent: i32,
    /// Whether it has a fraction or an exponent: serde_json reads those as floats.
    float: bool,
}

impl Number {
    /// The number as serde_json's `Int`, if it is one: an integer without fraction or exponent
    /// in `i64`'s range, but negative zero (which serde_json makes a float).
    #[inline(always)]
    fn int(&self) -> Option<i64> {
        let significand = self.significand;
        if self.float || self.overflow {
            None
        } else if !self.negative {
            i64::try_from(significand).ok()
        } else if significand == 0 || significand > 1 << 63 {
            None
        } else {
            Some((significand as i64).wrapping_neg())
        }
    }
}

impl<'a> Scanner<'a> {
    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// Consumes `byte` if it comes next.
    #[inline]
    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// The rest of a string whose opening quote is consumed, if it has no escapes or control
    /// characters: where its text starts and ends. Consumes the closing quote.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        let end = closing_quote(self.bytes, start)?;
        self.at = end + 1;
        Some((start, end))
    }

    /// The rest of a string as text (see [`Scanner::string`]).
    #[inline(always)]
    fn text(&mut self) -> Option<&'a str> {
        let (start, end) = self.string()?;
        self.text.get(start..end)
    }

    /// Consumes `word` (a literal) if it comes next.
    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        if self.bytes.get(self.at..end)? == word {
            self.at = end;
            Some(())
        } else {
            None
        }
    }

    /// Reads the value of a slot of `lane` into `record` if the value has the kind the lane
    /// expects (`Some(true)`); `Some(false)` leaves it unread for the general path, and `None`
    /// gives up on the record.
    #[inline(always)]
    fn lane(&mut self, record: &mut Record<'_>, lane: Lane) -> Option<bool> {
        let next = self.bytes.get(self.at).copied();
        match (lane, next) {
            (Lane::Int(index), Some(b'-' | b'0'..=b'9')) => {
                let start = self.at;
                match self.number()?.int() {
                    Some(int) => {
                        record.mark_present(index);
                        *record.row.get_mut(index)? = Value::Int(int);
                        Some(true)
                    }
                    None => {
                        self.at = start;
                        Some(false)
                    }
                }
            }
            (Lane::Time, Some(b'"')) => {
                self.at += 1;
                record.set_time(parse_text(self.text()?)?);
                Some(true)
            }
            (Lane::Kind, Some(b'"')) => {
                self.at += 1;
                record.kind = Some(crate::intern::intern(self.text()?));
                Some(true)
            }
            (Lane::Id, Some(b'"')) => {
                self.at += 1;
                record.id = Some(Arc::from(self.text()?));
                Some(true)
            }
            _ => Some(false),
        }
    }

    /// A value other than a list or an object, as serde_json hands it to `ScalarVisitor`.
    #[inline(always)]
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                Some(Scalar::Str(Cow::Borrowed(self.text()?)))
            }
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Scalar::Null),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                let number = self.number()?;
                number_value(&number, self.bytes.get(start..self.at)?)
            }
            _ => None,
        }
    }

    /// Skips a value a field of the record holds (see the module's documentation for what it
    /// checks).
    #[inline]
    fn skip_value(&mut self) -> Option<()> {
        match *self.bytes.get(self.at)? {
            b'[' | b'{' => self.skip_nested(),
            _ => self.skip_scalar(),
        }
    }

    /// Skips a value other than a list or an object.
    #[inline(always)]
    fn skip_scalar(&mut self) -> Option<()> {
        match *self.bytes.get(self.at)? {
            b'"' => {
                self.at += 1;
                self.skip_string()
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                // serde_json refuses a number beyond `f64`: one within `u64`'s digits and an
                // exponent up to 22 is below 1.9e41, anything else is left to it. (A check that
                // converts the number costs the loop without a schema a fifth of its speed.)
                let number = self.number()?;
                (!number.overflow && number.exponent <= 22).then_some(())
            }
            _ => None,
        }
    }

    /// Skips the rest of a string whose opening quote is consumed, escapes included, and
    /// consumes its closing quote. Gives up on an invalid escape, a raw control character or a
    /// `\u` escape of a UTF-16 surrogate (serde_json refuses a lone one; the serde path checks
    /// pairs).
    #[inline(always)]
    fn skip_string(&mut self) -> Option<()> {
        let at = special(self.bytes, self.at)?;
        if *self.bytes.get(at)? == b'"' {
            self.at = at + 1;
            return Some(());
        }
        self.skip_escaped_string()
    }

    /// [`Scanner::skip_string`] of a string with a backslash or control character (out of
    /// line, to keep the common case small).
    #[inline(never)]
    fn skip_escaped_string(&mut self) -> Option<()> {
        loop {
            let at = special(self.bytes, self.at)?;
            match *self.bytes.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    return Some(());
                }
                b'\\' => {
                    self.at = at + 2;
                    match *self.bytes.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let digits = self.bytes.get(at + 2..at + 6)?;
                            let mut unit = 0u32;
                            for &digit in digits {
                                unit = unit << 4 | char::from(digit).to_digit(16)?;
                            }
                            if (0xD800..0xE000).contains(&unit) {
                                return None;
                            }
                            self.at = at + 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// Skips a list or an object (at `self.at`) inside the record, without recursion: a bit a
    /// level says whether it is an object. Gives up beyond [`MAX_NESTING`] levels, the record
    /// counted. (Out of line, to keep the loop over a record's fields small.)
    #[inline(never)]
    fn skip_nested(&mut self) -> Option<()> {
        // The levels open inside the record (at most `MAX_NESTING - 1 < 128`), innermost in
        // the lowest bit, set for an object.
        let mut objects: u128 = 0;
        let mut depth = 1usize;
        loop {
            // A value comes next.
            match *self.bytes.get(self.at)? {
                open @ (b'[' | b'{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return None;
                    }
                    let object = open == b'{';
                    objects = objects << 1 | u128::from(object);
                    self.at += 1;
                    self.skip_whitespace();
                    let close = if object { b'}' } else { b']' };
                    if !self.eat(close) {
                        if object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                    depth -= 1;
                    objects >>= 1;
                }
                _ => self.skip_scalar()?,
            }
            // After a value: a comma, or the end of as many levels as close here.
            loop {
                if depth == 1 {
                    return Some(());
                }
                self.skip_whitespace();
                let object = objects & 1 == 1;
                match (self.next()?, object) {
                    (b',', _) => {
                        self.skip_whitespace();
                        if object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    (b']', false) | (b'}', true) => {
                        depth -= 1;
                        objects >>= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// Skips an object's key, its colon and the whitespace around it, up to its value.
    #[inline]
    fn skip_key(&mut self) -> Option<()> {
        if !self.eat(b'"') {
            return None;
        }
        self.skip_string()?;
        self.skip_whitespace();
        if !self.eat(b':') {
            return None;
        }
        self.skip_whitespace();
        Some(())
    }

    /// Scans a number by the JSON grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Option<Number> {
        let bytes = self.bytes;
        let mut at = self.at;
        let mut number = Number {
            negative: false,
            significand: 0,
            overflow: false,
            exponent: 0,
            float: false,
        };
        // Up to 19 digits cannot overflow; past that, `significand` is computed again with
        // checks.
        let mut digits = 0usize;
        let digit = |number: &mut Number, byte: u8| {
            number.significand = number
                .significand
                .wrapping_mul(10)
                .wrapping_add(u64::from(byte - b'0'));
        };
        if bytes.get(at) == Some(&b'-') {
            number.negative = true;
            at += 1;
        }
        let mantissa = at;
        match bytes.get(at) {
            Some(b'0') => {
                at += 1;
                if let Some(b'0'..=b'9') = bytes.get(at) {
                    return None;
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
                    digit(&mut number, byte);
                    digits += 1;
                    at += 1;
                }
            }
            _ => return None,
        }
        if bytes.get(at) == Some(&b'.') {
            number.float = true;
            at += 1;
            let start = at;
            while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
                digit(&mut number, byte);
                digits += 1;
                number.exponent = number.exponent.saturating_sub(1);
                at += 1;
            }
            if at == start {
                return None;
            }
        }
        if digits > 19 {
            let mut significand: Option<u64> = Some(0);
            for &byte in bytes.get(mantissa..at)?.iter().filter(|&&b| b != b'.') {
                significand = significand
                    .and_then(|n| n.checked_mul(10))
                    .and_then(|n| n.checked_add(u64::from(byte - b'0')));
            }
            match significand {
                Some(n) => number.significand = n,
                None => number.overflow = true,
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            number.float = true;
            at += 1;
            let negative = match bytes.get(at) {
                Some(b'-') => {
                    at += 1;
                    true
                }
                Some(b'+') => {
                    at += 1;
                    false
                }
                _ => false,
            };
            let start = at;
            let mut exponent: i32 = 0;
            while let Some(&byte @ b'0'..=b'9') = bytes.get(at) {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i32::from(byte - b'0'));
                at += 1;
            }
            if at == start {
                return None;
            }
            number.exponent = if negative {
                number.exponent.saturating_sub(exponent)
            } else {
                number.exponent.saturating_add(exponent)
            };
        }
        self.at = at;
        Some(number)
    }
}

/// The scalar serde_json makes of `number` (whose text is `text`): integers that fit `i64` are
/// `Int`, other integers that fit `u64` are `Float` (as `ScalarVisitor::visit_u64` does),
/// negative zero and integers below `i64::MIN` are `Float` (as serde_json makes them); floats
/// are computed here only where a single exact operation gives the correctly rounded result
/// (which is then serde_json's too), and otherwise by serde_json itself.
#[inline(always)]
fn number_value<'a>(number: &Number, text: &[u8]) -> Option<Scalar<'a>> {
    let significand = number.significand;
    if let Some(int) = number.int() {
        return Some(Scalar::Int(int));
    }
    if !number.float && !number.overflow {
        return Some(Scalar::Float(if number.negative {
            -(significand as f64)
        } else {
            significand as f64
        }));
    }
    let exponent = number.exponent.unsigned_abs() as usize;
    if number.float && !number.overflow && significand <= 1 << 53 && exponent < POW10.len() {
        // `significand` and the power of ten are exact as `f64`, so one multiplication or
        // division rounds correctly.
        let magnitude = if number.exponent >= 0 {
            significand as f64 * POW10[exponent]
        } else {
            significand as f64 / POW10[exponent]
        };
        return Some(Scalar::Float(if number.negative {
            -magnitude
        } else {
            magnitude
        }));
    }
    serde_json::from_slice::<f64>(text).ok().map(Scalar::Float)
}

#[cfg(test)]
mod tests;

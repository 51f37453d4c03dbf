//! JSON Lines input shared by the file and stdin sources: large reads split into lines with
//! their offsets and numbers, and each line decoded into an event or a dead letter.

use std::io::Read;
use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::Event;

use crate::side::{SideData, SideKind, SideRecord};

/// Splits a byte stream into lines with large reads, tracking the offset of each line.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    reader: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Byte offset in the stream of `buffer[start]`: where the next unread line begins.
    offset: u64,
    /// The 1-based number of the next line.
    line: u64,
    eof: bool,
}

pub(crate) const READ_SIZE: usize = 1 << 20;
/// Longer lines are refused as dead letters rather than grown into without limit.
const MAX_LINE: usize = 16 << 20;

/// One line read by a [`LineReader`].
pub(crate) enum Line<'a> {
    /// A complete line, without its newline, and its number.
    Text(&'a [u8], u64),
    /// A line longer than the limit, skipped; its number.
    TooLong(u64),
    /// No complete line buffered and nothing more to read now.
    Exhausted,
}

impl<R: Read> LineReader<R> {
    pub(crate) fn new(reader: R, offset: u64, line: u64) -> Self {
        LineReader {
            reader,
            buffer: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            offset,
            line,
            eof: false,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn line_number(&self) -> u64 {
        self.line
    }

    /// Whether a complete line is buffered, so that the next line needs no read (which may
    /// block on a pipe or a terminal).
    pub(crate) fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buffer[self.start..self.end]).is_some()
    }

    /// Forgets a previous end of input, to read again from a file that grew.
    pub(crate) fn retry(&mut self) {
        self.eof = false;
    }

    /// The next line. At the end of input, a final line without a newline is returned as a
    /// line only when `final_partial` is set (a followed file may still be writing it).
    pub(crate) fn next_line(&mut self, final_partial: bool) -> std::io::Result<Line<'_>> {
        loop {
            if let Some(position) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                let line_start = self.start;
                let line_end = self.start + position;
                self.start = line_end + 1;
                self.offset += position as u64 + 1;
                let number = self.line;
                self.line += 1;
                let mut text = &self.buffer[line_start..line_end];
                if let Some(stripped) = text.strip_suffix(b"\r") {
                    text = stripped;
                }
                return Ok(Line::Text(text, number));
            }
            if self.eof {
                if final_partial && self.end > self.start {
                    let text = &self.buffer[self.start..self.end];
                    self.offset += text.len() as u64;
                    self.start = self.end;
                    let number = self.line;
                    self.line += 1;
                    return Ok(Line::Text(text, number));
                }
                return Ok(Line::Exhausted);
            }
            // Make room: move the partial line to the front, or grow for a long line.
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buffer.len() {
                if self.buffer.len() >= MAX_LINE {
                    return self.skip_long_line();
                }
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let read = self.reader.read(&mut self.buffer[self.end..])?;
            if read == 0 {
                self.eof = true;
            }
            self.end += read;
        }
    }

    fn skip_long_line(&mut self) -> std::io::Result<Line<'static>> {
        let number = self.line;
        loop {
            if let Some(position) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                self.start += position + 1;
                self.offset += position as u64 + 1;
                self.line += 1;
                return Ok(Line::TooLong(number));
            }
            self.offset += (self.end - self.start) as u64;
            self.start = 0;
            self.end = self.reader.read(&mut self.buffer)?;
            if self.end == 0 {
                self.eof = true;
                self.line += 1;
                return Ok(Line::TooLong(number));
            }
        }
    }
}

/// Hands the lines of one batch from `reader` to `line` until `max` records are read or no line
/// is left; blank lines are skipped and not counted. Returns the number of records. Where a
/// batch ends depends only on the input and `max`, never on who decodes it.
pub(crate) fn split_lines<R: Read>(
    reader: &mut LineReader<R>,
    final_partial: bool,
    max: usize,
    mut line: impl FnMut(Line<'_>),
) -> std::io::Result<usize> {
    let mut records = 0;
    while records < max {
        // Hand on what is decoded rather than wait for more input: a pipe may stay quiet.
        if records > 0 && !reader.has_buffered_line() {
            break;
        }
        match reader.next_line(final_partial)? {
            Line::Text(text, _) if text.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Exhausted => break,
            other => {
                records += 1;
                line(other);
            }
        }
    }
    Ok(records)
}

/// Decodes one line (or records a line that was too long) into `events` or `dead_letters`.
pub(crate) fn decode_line(
    line: Line<'_>,
    decoder: &Decoder,
    stage: &Arc<str>,
    events: &mut Vec<Event>,
    dead_letters: &mut Vec<SideRecord>,
) {
    match line {
        Line::Text(text, number) => match decoder.decode(text, number) {
            Ok(event) => events.push(event),
            Err(error) => dead_letters.push(SideRecord {
                kind: SideKind::DeadLetter,
                stage: stage.clone(),
                reason: error.to_string(),
                line: Some(number),
                record: SideData::Raw(String::from_utf8_lossy(text).into_owned()),
            }),
        },
        Line::TooLong(number) => dead_letters.push(SideRecord {
            kind: SideKind::DeadLetter,
            stage: stage.clone(),
            reason: format!("line {number}: longer than {MAX_LINE} bytes"),
            line: Some(number),
            record: SideData::Raw(String::new()),
        }),
        Line::Exhausted => {}
    }
}

/// Decodes lines from `reader` into events until `max` are read or no line is left.
pub(crate) fn read_lines<R: Read>(
    reader: &mut LineReader<R>,
    decoder: &Decoder,
    stage: &Arc<str>,
    final_partial: bool,
    max: usize,
    events: &mut Vec<Event>,
    dead_letters: &mut Vec<SideRecord>,
) -> std::io::Result<usize> {
    split_lines(reader, final_partial, max, |line| {
        decode_line(line, decoder, stage, events, dead_letters)
    })
}

/// The lines of one batch, copied out of the read buffer for a decode thread.
#[derive(Debug, Default)]
pub(crate) struct RawBatch {
    bytes: Vec<u8>,
    /// Per line: where its text ends in `bytes` (it starts where the previous one ended), its
    /// number, and whether it was too long (then it has no text).
    lines: Vec<(usize, u64, bool)>,
}

impl RawBatch {
    pub(crate) fn push(&mut self, line: Line<'_>) {
        match line {
            Line::Text(text, number) => {
                self.bytes.extend_from_slice(text);
                self.lines.push((self.bytes.len(), number, false));
            }
            Line::TooLong(number) => self.lines.push((self.bytes.len(), number, true)),
            Line::Exhausted => {}
        }
    }

    pub(crate) fn decode(&self, decoder: &Decoder, stage: &Arc<str>) -> Decoded {
        let mut decoded = Decoded {
            events: Vec::with_capacity(self.lines.len()),
            dead_letters: Vec::new(),
        };
        let mut start = 0;
        for &(end, number, too_long) in &self.lines {
            let line = if too_long {
                Line::TooLong(number)
            } else {
                Line::Text(&self.bytes[start..end], number)
            };
            decode_line(
                line,
                decoder,
                stage,
                &mut decoded.events,
                &mut decoded.dead_letters,
            );
            start = end;
        }
        decoded
    }
}

/// What a decode thread hands back for one batch.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) events: Vec<Event>,
    pub(crate) dead_letters: Vec<SideRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], read_size_limit: bool) -> Vec<(String, u64, u64)> {
        let mut reader = LineReader::new(input, 0, 1);
        if read_size_limit {
            reader.buffer.truncate(4);
        }
        let mut out = Vec::new();
        loop {
            match reader.next_line(true).expect("in-memory read") {
                Line::Text(text, number) => {
                    let text = String::from_utf8_lossy(text).into_owned();
                    out.push((text, number, reader.offset()));
                }
                Line::TooLong(number) => out.push(("<too long>".into(), number, reader.offset())),
                Line::Exhausted => return out,
            }
        }
    }

    #[test]
    fn line_reader_tracks_offsets_across_refills_and_crlf() {
        let input = b"ab\r\ncdefghij\n\nlast";
        let expected = vec![
            ("ab".to_string(), 1, 4),
            ("cdefghij".to_string(), 2, 13),
            ("".to_string(), 3, 14),
            ("last".to_string(), 4, 18),
        ];
        assert_eq!(lines(input, false), expected);
        assert_eq!(lines(input, true), expected);
    }
}

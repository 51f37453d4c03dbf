//! Expressions: the [CEL](https://cel.dev) predicates, keys and computed fields of pipeline
//! configs.
//!
//! An [`Expr`] is compiled once, against the [`Layout`] of the stream it runs on, into a tree
//! of native operations over the event's [`Value`]s; evaluating it on an event does not go
//! through a general-purpose interpreter. A filter such as `price > 100 && channel == "web"`
//! on a row payload reads two fields by index, compares them with two constants and allocates
//! nothing. The few CEL constructs the compiler does not cover run in the `cel` interpreter
//! (see [Fallback](#fallback)), with exactly the same results, only slower.
//!
//! ```
//! use std::sync::Arc;
//! use dataflow_event::{Event, FieldType, Layout, Schema, Value};
//! use dataflow_expr::Expr;
//!
//! let schema = Schema::new([("price", FieldType::Float), ("channel", FieldType::String)]).unwrap();
//! let layout = Layout::Row(Arc::new(schema));
//! let filter = Expr::compile(r#"price > 100 && channel == "web""#, &layout).unwrap();
//! let event = Event::row(0, vec![Value::Float(120.0), Value::str("web")]);
//! assert!(filter.eval_bool(&event).unwrap());
//! ```
//!
//! # Names
//!
//! - `payload.NAME` and `payload["NAME"]` read the payload field `NAME` (the second form takes
//!   any name, `payload["user-id"]`). A bare `NAME` is shorthand for `payload.NAME`, for any
//!   identifier other than `payload` and `event` (a field called `payload` or `event` is only
//!   reachable as `payload["payload"]`). `payload` alone is the whole payload, as a map (on a
//!   row layout, with every field of the schema).
//! - `event.type` (string, or null when the source gives none), `event.id` (string or null),
//!   `event.time` (int, epoch milliseconds), `event.processing_time` (int, epoch milliseconds),
//!   `event.key` (the key set by `key_by`, or null) and `event.headers` (a map of strings).
//!   `event` alone is all of these, as a map. Any other `event.NAME` is a compile error.
//! - On a **row** layout (a stream with a schema), fields are resolved when the expression is
//!   compiled: a name the schema lacks is a compile error that lists the schema's fields.
//!   Every field of a row is present, so `has(payload.NAME)` is `true` (a nullable field may
//!   hold null: test it with `payload.NAME != null`).
//! - On an **object** layout (no schema), fields are looked up by name on each event. Reading
//!   a field the event lacks is an evaluation error, ``no field `NAME` ``; test for it first
//!   with `has(payload.NAME)`, which is `false` when it is absent (and `has(m.key)` for a key of
//!   a map field `m`, which must itself be there): `has(payload.coupon) && coupon != ""`.
//! - Fields holding maps (JSON objects) are selected into: `user.address.city`, or
//!   `user["address"]`. Lists and maps are indexed: `tags[0]`, `attrs["color"]`. A missing key
//!   or an index out of bounds is an evaluation error.
//! - A bare name that is not a field but names a CEL type (`int`, `string`, `list`...) is that
//!   type, as in `type(x) == int` (on an object layout, a field of that name, when the event
//!   has one, wins).
//!
//! # Types
//!
//! Values are CEL values: `bool`, `int` (64-bit), `double` (schema type `float`), `string`,
//! `list`, `map` (with string keys) and `null`. Fields of schema type `timestamp` are `int`s of
//! epoch milliseconds, and `json` fields hold any value.
//!
//! CEL is strict about types, and so are expressions:
//!
//! - Arithmetic does not mix `int` and `double`: `1 + 2.0` and `qty * 1.5` fail with "no such
//!   overload". Convert explicitly: `double(qty) * 1.5`, `int(price) + 1`.
//! - `int` arithmetic is checked: an overflow, a division or modulus by zero is an error.
//!   `double` arithmetic follows IEEE 754 (`1.0 / 0.0` is infinity); `%` is for `int`s only.
//! - Comparisons (`<`, `<=`, `>`, `>=`) take two numbers (an `int` and a `double` compare by
//!   value: `price > 100` works on a float field), two strings, or two bools. Comparing a `NaN`
//!   or values of other types is an error, so is comparing `null`.
//! - `==` and `!=` take any two values: numbers compare by value (`1 == 1.0`), lists and maps
//!   element by element, and values of different types are simply not equal (`1 == "1"` is
//!   `false`, `null == 0` is `false`).
//!
//! # Operators and functions
//!
//! All of these are compiled natively:
//!
//! | | |
//! |---|---|
//! | literals | `42`, `-7`, `2.5`, `1e3`, `"text"`, `'text'`, `true`, `null`, `[1, 2, x]` |
//! | arithmetic | `+ - * / %`, unary `-`; `+` also concatenates strings and lists |
//! | comparison | `== != < <= > >=` |
//! | logic | `&&`, `\|\|`, `!`, `cond ? a : b` |
//! | membership | `x in [1, 2]` (list element), `"k" in m` (map key) |
//! | presence | `has(payload.f)`, `has(m.k)` |
//! | access | `m.k`, `m["k"]`, `l[0]` |
//! | functions | `size(x)` / `x.size()` (string length in characters, list or map size), `s.contains(t)`, `s.startsWith(t)`, `s.endsWith(t)`, `int(x)`, `double(x)`, `string(x)` |
//!
//! `&&` and `||` are CEL's: they absorb errors when the other side decides the result.
//! `false && x` and `x && false` are `false` even when `x` fails, `true || x` and `x || true`
//! are `true`. So a guard works in either order: `has(payload.n) && payload.n > 0`.
//!
//! `int(x)` converts a `double` (truncating; out of range is an error) or a string (`"42"`);
//! `double(x)` an `int` or a string; `string(x)` a bool, a number or a string.
//!
//! # Fallback
//!
//! The rest of CEL's standard library runs in the `cel` interpreter: the macros `all`,
//! `exists`, `exists_one`, `map` and `filter`, map literals (`{"a": 1}`), `uint` and `bytes`
//! values (`uint(x)`, `bytes(x)`), `type(x)`, `bool(x)`, `dyn(x)` and the `optional`
//! functions. Only the sub-expression that needs it is interpreted: in
//! `price > 100 && tags.exists(t, t == "sale")`, the comparison stays native and the
//! interpreter only runs for events that pass it. An expression with a `uint` or `bytes`
//! literal (`1u`, `b"..."`) runs in the interpreter as a whole, and so does, on that event, an
//! expression whose interpreted part yields a value with no [`Value`] form (a `uint`, `bytes`,
//! a type).
//!
//! The interpreter sees the same names: `payload` and `event` as maps, and each payload field
//! as a bare variable, converted from the event each time they are read. It is about ten
//! times slower than native evaluation; [`Expr::uses_interpreter`] tells whether an
//! expression needs it. The results are the same either way: the native operations follow the
//! interpreter's, which the tests check on random expressions and events.
//!
//! The functions CEL does not have in this build (no regular expressions, no timestamps or
//! durations, no string extensions such as `lowerAscii`) are compile errors.
//!
//! # Results
//!
//! [`Expr::eval`] returns the value; [`Expr::eval_bool`] requires a `bool` (a filter whose
//! result is another type fails). An interpreted expression's result is converted to a
//! [`Value`]: a `uint` to an `int` (an error above `i64::MAX`), a type to its name, an optional
//! to its value or null, map keys to their text; `bytes` are an error.
//!
//! # Errors
//!
//! [`Expr::compile`] fails with [`ExprError::Compile`] on a syntax error (with its line
//! and column), an unknown field of a row layout (listing the schema's fields), an unknown
//! `event.` attribute, an unknown function, a native function called with the wrong number of
//! arguments, an expression nested more than 100 levels deep (32 when part of it runs in the
//! interpreter; brackets nested deeper than 100 are refused before parsing, naming the line
//! and column of the first one too many), or longer than 64 KiB. Evaluation fails with
//! [`ExprError::Eval`] on a missing field of an object payload, a missing map key, an
//! index out of bounds, operands of the wrong type ("no such overload"), an integer overflow or
//! a division by zero: data-dependent failures are errors, never panics.
//!
//! An error echoes an expression of up to 120 characters whole. Of a longer one it echoes 120
//! characters around the error's position (the start when it has none), with `…` where text
//! is left out, and its message ends with `(the expression has N bytes; shown in part)`; a
//! syntax error lists at most its first 3 parser errors, each cut at 200 characters. So a
//! message stays short (under 1 KiB for ASCII text) however long the expression.

mod compile;
mod context;
mod error;
mod eval;
mod interp;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use cel::IdedExpr;
use dataflow_event::{Event, FieldType, Layout, Payload, Value};

use compile::Compiler;
use context::{Cx, Fault};
pub use error::{ExprError, Result};
use eval::{Node, Ty};

/// The stack of the thread that parses and compiles: the `cel` parser recurses deeply.
const COMPILE_STACK: usize = 64 << 20;

/// The longest source accepted, in bytes: the parser recurses once per operator of a chain
/// such as `a + b + c...`, and that stack suffices for this many.
const MAX_SOURCE_LEN: usize = 64 << 10;

/// A compiled CEL expression. Cheap to clone, and shareable between threads.
#[derive(Clone)]
pub struct Expr {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    /// What an evaluation error echoes of the source (see [`ECHO_CHARS`]), and whether that
    /// is only a part of it.
    echo: (String, bool),
    layout: Layout,
    /// The whole expression, for the interpreter.
    ast: Arc<IdedExpr>,
    /// The compiled expression; a [`Node::Interp`] when it runs in the interpreter as a whole.
    root: Node,
    output_type: Option<FieldType>,
    payload_fields: Vec<String>,
    whole_payload: bool,
    uses_interpreter: bool,
    /// Whether the expression runs in the interpreter as a whole.
    interpreted: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.inner.source)
            .field("uses_interpreter", &self.inner.uses_interpreter)
            .finish_non_exhaustive()
    }
}

/// The most of an expression's text an error echoes, in characters: an expression up to this
/// long is echoed whole; a longer one as this many characters around where the error is (its
/// start when the error has no position), with `…` where text is left out, and the message
/// then says how long the whole expression is.
const ECHO_CHARS: usize = 120;

/// The most syntax errors one message lists, and the most characters of each.
const MAX_SYNTAX_ERRORS: usize = 3;
const MAX_SYNTAX_MESSAGE: usize = 200;

/// The part of `source` an error echoes, around `at` (a line and a column, 1-based, in
/// characters), and whether that is only a part.
fn echo(source: &str, at: Option<(usize, usize)>) -> (String, bool) {
    let length = source.chars().count();
    if length <= ECHO_CHARS {
        return (source.to_string(), false);
    }
    let center = at.map_or(0, |(line, column)| {
        let line_start: usize = source
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(|text| text.chars().count())
            .sum();
        (line_start + column.saturating_sub(1)).min(length)
    });
    let start = center
        .saturating_sub(ECHO_CHARS / 2)
        .min(length - ECHO_CHARS);
    let end = start + ECHO_CHARS;
    let mut echoed = String::new();
    if start > 0 {
        echoed.push('…');
    }
    echoed.extend(source.chars().skip(start).take(ECHO_CHARS));
    if end < length {
        echoed.push('…');
    }
    (echoed, true)
}

/// The first `line L, column C` a message names.
fn position_in(message: &str) -> Option<(usize, usize)> {
    let (_, rest) = message.split_once("line ")?;
    let (line, rest) = rest.split_once(", column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.parse().ok()?, column.parse().ok()?))
}

/// `line L, column C` (1-based, in characters) of the byte `offset` of `source`.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for (_, c) in source.char_indices().take_while(|(at, _)| *at < offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn compile_error(source: &str, message: impl Into<String>) -> ExprError {
    let message = message.into();
    let (expression, partial) = echo(source, position_in(&message));
    ExprError::Compile {
        expression,
        message: if partial {
            format!(
                "{message} (the expression has {} bytes; shown in part)",
                source.len()
            )
        } else {
            message
        },
    }
}

/// Refuses, before parsing, an expression whose brackets nest more than
/// [`compile::MAX_DEPTH`] deep: the parser would recurse once per level (and then refuse it
/// anyway). Brackets inside string literals do not count.
fn check_nesting(source: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut chars = source.char_indices().peekable();
    let mut previous = None;
    while let Some((at, c)) = chars.next() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                if depth > compile::MAX_DEPTH {
                    let (line, column) = line_column(source, at);
                    return Err(format!(
                        "the expression is nested too deeply (more than {} levels) at line {line}, column {column}",
                        compile::MAX_DEPTH
                    ));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '\'' | '"' => {
                // A string literal: skip to its end (`'...'`, `"""..."""`; raw after `r`).
                let raw = matches!(previous, Some('r' | 'R'));
                let rest = &source[at..];
                let triple = rest.starts_with(&format!("{c}{c}{c}")[..]);
                let quote: String = std::iter::repeat_n(c, if triple { 3 } else { 1 }).collect();
                let body_start = at + quote.len();
                let mut end = None;
                let mut index = body_start;
                while index < source.len() {
                    let rest = &source[index..];
                    if !raw && rest.starts_with('\\') {
                        index += 1 + rest[1..].chars().next().map_or(0, char::len_utf8);
                        continue;
                    }
                    if rest.starts_with(&quote[..]) {
                        end = Some(index + quote.len());
                        break;
                    }
                    index += rest.chars().next().map_or(1, char::len_utf8);
                }
                // An unterminated string is the parser's to report.
                let Some(end) = end else { return Ok(()) };
                while chars.peek().is_some_and(|(at, _)| *at < end) {
                    chars.next();
                }
                previous = Some(c);
                continue;
            }
            _ => {}
        }
        previous = Some(c);
    }
    Ok(())
}

fn syntax_error(errors: &cel::ParseErrors) -> String {
    let mut messages: Vec<String> = errors
        .errors
        .iter()
        .take(MAX_SYNTAX_ERRORS)
        .map(|error| {
            let message = error
                .msg
                .strip_prefix("Syntax error: ")
                .unwrap_or(&error.msg);
            let message = if message.contains("Recursion limit of") {
                "the expression is nested too deeply for the CEL parser".to_string()
            } else if message.chars().count() > MAX_SYNTAX_MESSAGE {
                let cut: String = message.chars().take(MAX_SYNTAX_MESSAGE).collect();
                format!("{cut}…")
            } else {
                message.to_string()
            };
            format!(
                "syntax error at line {}, column {}: {message}",
                error.pos.0, error.pos.1
            )
        })
        .collect();
    if errors.errors.len() > MAX_SYNTAX_ERRORS {
        messages.push(format!(
            "and {} more syntax errors",
            errors.errors.len() - MAX_SYNTAX_ERRORS
        ));
    }
    if messages.is_empty() {
        "syntax error".to_string()
    } else {
        messages.join("; ")
    }
}

fn to_field_type(ty: Ty) -> FieldType {
    match ty {
        Ty::Bool => FieldType::Bool,
        Ty::Int => FieldType::Int,
        Ty::Timestamp => FieldType::Timestamp,
        Ty::Float => FieldType::Float,
        Ty::String => FieldType::String,
        Ty::List | Ty::Map => FieldType::Json,
    }
}

fn any_interp(node: &Node) -> bool {
    matches!(node, Node::Interp(_)) || node.children().into_iter().any(any_interp)
}

impl Expr {
    /// Compiles `source` against the payload layout of the stream it will run on.
    ///
    /// Compiling parses on a short-lived thread of its own (the parser needs a deep stack):
    /// compile once, when the pipeline is built, and evaluate many times.
    pub fn compile(source: &str, layout: &Layout) -> Result<Expr> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(compile_error(
                source,
                format!(
                    "the expression is too long ({} bytes, at most {MAX_SOURCE_LEN})",
                    source.len()
                ),
            ));
        }
        let owned_source = source.to_string();
        let owned_layout = layout.clone();
        // The `cel` parser needs a deep stack on nested input; a panic in it becomes an error.
        let compiler = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn(move || compile_inner(owned_source, owned_layout));
        match compiler {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(compile_error(source, "the CEL parser failed unexpectedly"))
            }),
            Err(error) => Err(compile_error(
                source,
                format!("cannot start the compiler thread: {error}"),
            )),
        }
    }

    /// The expression's source text.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Evaluates the expression on `event`.
    #[inline]
    pub fn eval(&self, event: &Event) -> Result<Value> {
        let cx = self.cx(event)?;
        if self.inner.interpreted {
            return self.interpret(&cx);
        }
        match self.inner.root.eval(&cx) {
            Ok(value) => Ok(value.into_value()),
            Err(fault) => self.recover(fault, &cx),
        }
    }

    /// Evaluates the expression as a condition: a result that is not a `bool` is an error.
    #[inline]
    pub fn eval_bool(&self, event: &Event) -> Result<bool> {
        let cx = self.cx(event)?;
        if self.inner.interpreted {
            return self.interpret_bool(&cx);
        }
        match self.inner.root.truth(&cx) {
            Ok(b) => Ok(b),
            Err(fault) => self
                .recover(fault, &cx)
                .and_then(|value| self.expect_bool(value)),
        }
    }

    /// The type of the expression's results, when it is known statically: literals, typed row
    /// fields, `int` and `double` arithmetic, comparisons and logic (`bool`), string functions...
    /// Lists and maps are [`FieldType::Json`]. A result may still be null where a nullable
    /// field or `event.type` can be.
    pub fn output_type(&self) -> Option<FieldType> {
        self.inner.output_type
    }

    /// The payload fields the expression reads, sorted. When it reads the payload as a whole
    /// (see [`Expr::reads_whole_payload`]), on a row layout that is every field of the schema.
    pub fn payload_fields(&self) -> Vec<String> {
        self.inner.payload_fields.clone()
    }

    /// Whether the expression reads the payload as a whole (`payload`, `payload[key]` with a
    /// computed key), so that any field may matter.
    pub fn reads_whole_payload(&self) -> bool {
        self.inner.whole_payload
    }

    /// Whether some of the expression runs in the `cel` interpreter (see the module docs).
    pub fn uses_interpreter(&self) -> bool {
        self.inner.uses_interpreter
    }

    /// Evaluates the whole expression in the `cel` interpreter, bypassing the native compiler.
    #[cfg(test)]
    pub(crate) fn eval_interpreted(&self, event: &Event) -> Result<Value> {
        let cx = self.cx(event)?;
        self.interpret(&cx)
    }

    /// After a native evaluation failed: the error, or the interpreter's result when the
    /// failure was a value the native evaluator cannot hold.
    #[cold]
    #[inline(never)]
    fn recover(&self, fault: Fault, cx: &Cx<'_>) -> Result<Value> {
        match fault {
            Fault::Message(message) => Err(self.eval_error(*message)),
            Fault::Unrepresentable => self.interpret(cx),
        }
    }

    #[inline(never)]
    fn interpret_bool(&self, cx: &Cx<'_>) -> Result<bool> {
        self.interpret(cx).and_then(|value| self.expect_bool(value))
    }

    fn expect_bool(&self, value: Value) -> Result<bool> {
        match value {
            Value::Bool(b) => Ok(b),
            other => {
                Err(self.eval_error(format!("expected a bool, got {}", eval::type_name(&other))))
            }
        }
    }

    #[inline(never)]
    fn interpret(&self, cx: &Cx<'_>) -> Result<Value> {
        interp::eval_root(&self.inner.ast, cx).map_err(|fault| match fault {
            Fault::Message(message) => self.eval_error(*message),
            Fault::Unrepresentable => self.eval_error("the result has no value form"),
        })
    }

    #[cold]
    fn eval_error(&self, message: impl Into<String>) -> ExprError {
        let (expression, partial) = &self.inner.echo;
        let message = message.into();
        ExprError::Eval {
            expression: expression.clone(),
            message: if *partial {
                format!(
                    "{message} (the expression has {} bytes; shown in part)",
                    self.inner.source.len()
                )
            } else {
                message
            },
        }
    }

    #[inline(always)]
    fn cx<'a>(&'a self, event: &'a Event) -> Result<Cx<'a>> {
        match (&self.inner.layout, &event.payload) {
            (Layout::Row(schema), Payload::Row(row)) => Ok(Cx {
                event,
                row,
                object: None,
                schema: Some(schema),
            }),
            (Layout::Object, Payload::Object(object)) => Ok(Cx {
                event,
                row: &[],
                object: Some(object),
                schema: None,
            }),
            _ => Err(self.layout_mismatch()),
        }
    }

    #[cold]
    #[inline(never)]
    fn layout_mismatch(&self) -> ExprError {
        self.eval_error(match self.inner.layout {
            Layout::Row(_) => "the expression was compiled for row payloads, not object payloads",
            Layout::Object => "the expression was compiled for object payloads, not row payloads",
        })
    }
}

fn compile_inner(source: String, layout: Layout) -> Result<Expr> {
    check_nesting(&source).map_err(|message| compile_error(&source, message))?;
    let program = cel::Program::compile(&source)
        .map_err(|errors| compile_error(&source, syntax_error(&errors)))?;
    let ast = program.expression();
    let (depth, deepest) = compile::depth(ast);
    if depth > compile::MAX_DEPTH {
        let at = match program.source_info().offset_for(deepest) {
            Some((offset, _)) => {
                let (line, column) = line_column(&source, offset as usize);
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        return Err(compile_error(
            &source,
            format!(
                "the expression is nested too deeply (more than {} levels){at}",
                compile::MAX_DEPTH
            ),
        ));
    }
    if compile::has_unspecified(ast) {
        return Err(compile_error(&source, "unsupported expression"));
    }
    let mut compiler = Compiler::new(&source, program.source_info(), &layout);
    let root = if compile::has_foreign_literal(ast) {
        compiler.interp(ast)
    } else {
        compiler.compile(ast)
    }
    .map_err(|message| compile_error(&source, message))?;
    let mut payload_fields: Vec<String> = compiler.fields.into_iter().collect();
    let whole_payload = compiler.whole_payload;
    if whole_payload {
        if let Some(schema) = layout.schema() {
            payload_fields = schema.fields().iter().map(|f| f.name.clone()).collect();
            payload_fields.sort();
        }
    }
    let output_type = root.ty(layout.schema().map(|s| &**s)).map(to_field_type);
    let uses_interpreter = any_interp(&root);
    let interpreted = matches!(root, Node::Interp(_));
    // An interpreted part may make the whole expression run in the interpreter.
    if uses_interpreter && depth > compile::MAX_INTERPRETED_DEPTH {
        return Err(compile_error(
            &source,
            format!(
                "the expression is nested too deeply for the CEL interpreter (more than {} levels)",
                compile::MAX_INTERPRETED_DEPTH
            ),
        ));
    }
    Ok(Expr {
        inner: Arc::new(Inner {
            ast: Arc::new(ast.clone()),
            echo: echo(&source, None),
            source,
            layout,
            root,
            output_type,
            payload_fields,
            whole_payload,
            uses_interpreter,
            interpreted,
        }),
    })
}

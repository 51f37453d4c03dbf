//! The native evaluator: a tree of [`Node`]s evaluated straight over an event's [`Value`]s.
//!
//! Every operation here mirrors what the `cel` interpreter does on the same values (see the
//! differential test in `tests.rs`): the same overloads, the same numeric comparisons, the same
//! errors. Evaluation borrows where it can ([`Cow::Borrowed`] for fields and literals), so a
//! comparison of a field with a literal neither allocates nor touches a reference count.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use dataflow_event::{Schema, Value};

use super::context::{event_map, payload_map, Attr, Cx, Eval, Fault, Val};
use super::interp;

/// A payload field by name, as `payload[name]` reads it.
fn payload_field<'a>(cx: &Cx<'a>, name: &str) -> Option<&'a Value> {
    match (cx.object, cx.schema) {
        (Some(object), _) => object.get(name),
        (None, Some(schema)) => schema.index_of(name).and_then(|index| cx.row.get(index)),
        (None, None) => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arith {
    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Rem => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    fn test(self, ordering: Ordering) -> bool {
        match self {
            Cmp::Lt => ordering == Ordering::Less,
            Cmp::Le => ordering != Ordering::Greater,
            Cmp::Gt => ordering == Ordering::Greater,
            Cmp::Ge => ordering != Ordering::Less,
        }
    }
}

/// Functions of one value: `size(x)` / `x.size()`, `int(x)`, `double(x)`, `string(x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func1 {
    Size,
    Int,
    Double,
    String,
}

/// String methods: `s.contains(t)`, `s.startsWith(t)`, `s.endsWith(t)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func2 {
    Contains,
    StartsWith,
    EndsWith,
}

impl Func2 {
    pub fn name(self) -> &'static str {
        match self {
            Func2::Contains => "contains",
            Func2::StartsWith => "startsWith",
            Func2::EndsWith => "endsWith",
        }
    }
}

/// A compiled expression.
#[derive(Debug)]
pub(super) enum Node {
    /// A literal, or a constant-folded sub-expression.
    Const(Value),
    /// A field of a row payload, by index (with its name for errors).
    RowField(usize, Box<str>),
    /// A field of an object payload, by name: an error when absent.
    ObjField(Box<str>),
    /// `has(payload.NAME)` on an object payload.
    HasObjField(Box<str>),
    /// The whole payload, as a map.
    Payload,
    /// `payload[key]` with a computed key.
    PayloadIndex(Box<Node>),
    /// `event.NAME`.
    Event(Attr),
    /// The whole event, as a map.
    EventMap,
    /// `operand.NAME` on a map.
    Select(Box<Node>, Box<str>),
    /// `has(operand.NAME)` on a map.
    Has(Box<Node>, Box<str>),
    /// `operand[index]` on a list or a map.
    Index(Box<Node>, Box<Node>),
    /// A list literal.
    List(Vec<Node>),
    /// A map literal whose keys are distinct string literals.
    Map(Vec<(Box<str>, Node)>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Eq(Box<Node>, Box<Node>),
    Ne(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    Call1(Func1, Box<Node>),
    /// A string method: receiver, argument.
    Call2(Func2, Box<Node>, Box<Node>),
    /// A sub-expression the native compiler does not cover, run by the `cel` interpreter.
    Interp(Arc<cel::IdedExpr>),
}

impl Node {
    /// The direct sub-expressions of this node.
    pub fn children(&self) -> Vec<&Node> {
        match self {
            Node::Const(_)
            | Node::RowField(..)
            | Node::ObjField(_)
            | Node::HasObjField(_)
            | Node::Payload
            | Node::Event(_)
            | Node::EventMap
            | Node::Interp(_) => Vec::new(),
            Node::PayloadIndex(a)
            | Node::Select(a, _)
            | Node::Has(a, _)
            | Node::Not(a)
            | Node::Neg(a)
            | Node::Call1(_, a) => vec![a],
            Node::Index(a, b)
            | Node::Arith(_, a, b)
            | Node::Eq(a, b)
            | Node::Ne(a, b)
            | Node::Cmp(_, a, b)
            | Node::And(a, b)
            | Node::Or(a, b)
            | Node::In(a, b)
            | Node::Call2(_, a, b) => vec![a, b],
            Node::Cond(a, b, c) => vec![a, b, c],
            Node::List(items) => items.iter().collect(),
            Node::Map(entries) => entries.iter().map(|(_, value)| value).collect(),
        }
    }

    /// Evaluates the node.
    pub fn eval<'a>(&'a self, cx: &Cx<'a>) -> Eval<'a> {
        match self {
            Node::Const(_) | Node::RowField(..) | Node::ObjField(_) => eval_operand(self, cx),
            Node::Payload => Ok(Val::of(payload_map(cx))),
            Node::PayloadIndex(key) => {
                let key = eval_operand(key, cx)?;
                match &*key.view() {
                    Value::Str(name) => payload_field(cx, name)
                        .map(Val::Ref)
                        .ok_or_else(|| no_field(name)),
                    other => Err(no_such_key(other)),
                }
            }
            Node::Event(attr) => Ok(attr.value(cx.event)),
            Node::EventMap => Ok(Val::of(event_map(cx.event))),
            Node::Select(operand, field) => {
                let operand = eval_operand(operand, cx)?;
                project(operand, |value| select_field(value, field))
            }
            Node::Index(operand, index) => {
                let operand = eval_operand(operand, cx)?;
                let index = eval_operand(index, cx)?;
                project(operand, |value| index_into(value, &index.view()))
            }
            Node::List(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(eval_operand(item, cx)?.into_value());
                }
                Ok(Val::Own(Box::new(Value::List(Arc::new(values)))))
            }
            Node::Map(entries) => {
                let mut map = std::collections::BTreeMap::new();
                for (key, value) in entries {
                    map.insert(key.to_string(), eval_operand(value, cx)?.into_value());
                }
                Ok(Val::Own(Box::new(Value::Map(Arc::new(map)))))
            }
            Node::Neg(operand) => match eval_operand(operand, cx)? {
                Val::Int(i) => negate(i),
                Val::Float(f) => Ok(Val::Float(-f)),
                other => match &*other.view() {
                    Value::Int(i) => negate(*i),
                    Value::Float(f) => Ok(Val::Float(-f)),
                    other => Err(Fault::msg(format!(
                        "no such overload: -{}",
                        type_name(other)
                    ))),
                },
            },
            Node::Arith(op, left, right) => {
                let left = eval_operand(left, cx)?;
                let right = eval_operand(right, cx)?;
                arith(*op, &left.view(), &right.view())
            }
            Node::Cond(cond, then, otherwise) => {
                if cond.truth(cx)? {
                    then.eval(cx)
                } else {
                    otherwise.eval(cx)
                }
            }
            Node::Call1(func, arg) => {
                let arg = eval_operand(arg, cx)?;
                call1(*func, arg)
            }
            Node::Interp(expr) => interp::eval_node(expr, cx).map(Val::of),
            Node::HasObjField(_)
            | Node::Has(..)
            | Node::Not(_)
            | Node::Eq(..)
            | Node::Ne(..)
            | Node::Cmp(..)
            | Node::And(..)
            | Node::Or(..)
            | Node::In(..)
            | Node::Call2(..) => self.truth(cx).map(Val::Bool),
        }
    }

    /// Evaluates the node as a condition: a result that is not a bool is an error.
    pub fn truth(&self, cx: &Cx<'_>) -> Result<bool, Fault> {
        match self {
            Node::Const(Value::Bool(b)) => Ok(*b),
            Node::HasObjField(name) => {
                Ok(cx.object.is_some_and(|object| object.contains_key(&**name)))
            }
            Node::Has(operand, field) => match &*eval_operand(operand, cx)?.view() {
                Value::Map(map) => Ok(map.contains_key(&**field)),
                other => Err(Fault::msg(format!(
                    "no such overload: has() of field `{field}` on {}",
                    type_name(other)
                ))),
            },
            Node::Not(operand) => match eval_operand(operand, cx)? {
                Val::Bool(b) => Ok(!b),
                Val::Ref(&Value::Bool(b)) => Ok(!b),
                other => Err(Fault::msg(format!(
                    "no such overload: !{}",
                    type_name(&other.view())
                ))),
            },
            Node::Eq(left, right) => {
                let left = eval_operand(left, cx)?;
                let right = eval_operand(right, cx)?;
                Ok(equals(&left.view(), &right.view()))
            }
            Node::Ne(left, right) => {
                let left = eval_operand(left, cx)?;
                let right = eval_operand(right, cx)?;
                Ok(!equals(&left.view(), &right.view()))
            }
            Node::Cmp(op, left, right) => {
                let left = eval_operand(left, cx)?;
                let right = eval_operand(right, cx)?;
                compare(*op, &left.view(), &right.view()).map(|ordering| op.test(ordering))
            }
            Node::And(left, right) => junction(left, right, cx, false),
            Node::Or(left, right) => junction(left, right, cx, true),
            Node::In(needle, haystack) => {
                let needle = eval_operand(needle, cx)?;
                let haystack = eval_operand(haystack, cx)?;
                contains(&haystack.view(), &needle.view())
            }
            Node::Call2(func, receiver, arg) => {
                let receiver = eval_operand(receiver, cx)?;
                let arg = eval_operand(arg, cx)?;
                match (&*receiver.view(), &*arg.view()) {
                    (Value::Str(s), Value::Str(t)) => Ok(match func {
                        Func2::Contains => s.contains(&**t),
                        Func2::StartsWith => s.starts_with(&**t),
                        Func2::EndsWith => s.ends_with(&**t),
                    }),
                    (s, t) => Err(Fault::msg(format!(
                        "no such overload: {}.{}({})",
                        type_name(s),
                        func.name(),
                        type_name(t)
                    ))),
                }
            }
            other => match other.eval(cx)? {
                Val::Bool(b) | Val::Ref(&Value::Bool(b)) => Ok(b),
                value => Err(Fault::msg(format!(
                    "expected a bool, got {}",
                    type_name(&value.view())
                ))),
            },
        }
    }
}

/// `&&` (`absorbing` false) and `||` (`absorbing` true) with CEL's commutative error absorption:
/// an absorbing value on either side wins over an error on the other (`false && error` is
/// `false`); otherwise the first error stands. A value with no exact form sends the whole
/// expression to the interpreter, whichever side it came from.
#[inline(always)]
fn junction(left: &Node, right: &Node, cx: &Cx<'_>, absorbing: bool) -> Result<bool, Fault> {
    let left = left.truth(cx);
    match left {
        Ok(value) if value == absorbing => return Ok(absorbing),
        Err(Fault::Unrepresentable) => return Err(Fault::Unrepresentable),
        _ => {}
    }
    match (left, right.truth(cx)) {
        (_, Err(Fault::Unrepresentable)) => Err(Fault::Unrepresentable),
        (Ok(_), right) => right,
        (Err(_), Ok(value)) if value == absorbing => Ok(absorbing),
        (Err(error), _) => Err(error),
    }
}

/// Evaluates an operand: fields and constants inline, without a call.
#[inline(always)]
fn eval_operand<'a>(node: &'a Node, cx: &Cx<'a>) -> Eval<'a> {
    match node {
        Node::Const(value) => Ok(Val::Ref(value)),
        Node::RowField(index, name) => match cx.row.get(*index) {
            Some(value) => Ok(Val::Ref(value)),
            None => Err(short_row(name)),
        },
        Node::ObjField(name) => match cx.object.and_then(|object| object.get(&**name)) {
            Some(value) => Ok(Val::Ref(value)),
            None => Err(no_field(name)),
        },
        other => other.eval(cx),
    }
}

/// Applies `select` to a value, keeping the borrow when there is one.
fn project<'a>(
    value: Val<'a>,
    select: impl for<'x> FnOnce(&'x Value) -> Result<&'x Value, Fault>,
) -> Eval<'a> {
    match value {
        Val::Ref(value) => select(value).map(Val::Ref),
        other => select(&other.view()).map(|v| Val::of(v.clone())),
    }
}

fn select_field<'x>(value: &'x Value, field: &str) -> Result<&'x Value, Fault> {
    match value {
        Value::Map(map) => map
            .get(field)
            .ok_or_else(|| Fault::msg(format!("no such key: {field}"))),
        other => Err(Fault::msg(format!(
            "no such overload: cannot select field `{field}` on {}",
            type_name(other)
        ))),
    }
}

fn negate<'a>(i: i64) -> Eval<'a> {
    i.checked_neg()
        .map(Val::Int)
        .ok_or_else(|| Fault::msg(format!("integer overflow in -({i})")))
}

#[cold]
fn short_row(name: &str) -> Fault {
    Fault::msg(format!("the row has no value for field `{name}`"))
}

#[cold]
fn no_field(name: &str) -> Fault {
    Fault::msg(format!("no field `{name}`"))
}

#[cold]
fn no_such_key(key: &Value) -> Fault {
    Fault::msg(format!("no such key: {key}"))
}

/// The CEL name of a value's type.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "double",
        Value::Str(_) => "string",
        Value::List(_) => "list",
        Value::Map(_) => "map",
    }
}

#[cold]
fn overload(op: &str, left: &Value, right: &Value) -> Fault {
    Fault::msg(format!(
        "no such overload: {} {op} {}",
        type_name(left),
        type_name(right)
    ))
}

/// CEL equality: numbers compare by value across `int` and `double` (`NaN` equals nothing),
/// lists and maps element by element, and values of other different types are never equal.
pub(super) fn equals(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Int(a), Value::Float(b)) => (*a as f64) == *b,
        (Value::Float(a), Value::Int(b)) => *a == (*b as f64),
        (Value::Float(a), Value::Float(b)) => a == b,
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::List(a), Value::List(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| equals(x, y))
        }
        (Value::Map(a), Value::Map(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| equals(x, y)))
        }
        _ => false,
    }
}

/// CEL ordering: numbers across `int` and `double` (`NaN` is an error), strings, bools.
fn compare(op: Cmp, left: &Value, right: &Value) -> Result<Ordering, Fault> {
    let ordering = match (left, right) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
        (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
        (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => return Err(overload(op.symbol(), left, right)),
    };
    ordering.ok_or_else(|| Fault::msg(format!("{left:?} cannot be compared to {right:?}")))
}

#[cold]
fn overflow(op: Arith, left: i64, right: i64) -> Fault {
    Fault::msg(format!(
        "integer overflow in {left} {} {right}",
        op.symbol()
    ))
}

/// CEL arithmetic: `int` with `int` (checked), `double` with `double`, `string + string`,
/// `list + list`. There is no implicit conversion between `int` and `double`.
fn arith<'a>(op: Arith, left: &Value, right: &Value) -> Eval<'a> {
    match (op, left, right) {
        (_, Value::Int(a), Value::Int(b)) => {
            let (a, b) = (*a, *b);
            let result = match op {
                Arith::Add => a.checked_add(b),
                Arith::Sub => a.checked_sub(b),
                Arith::Mul => a.checked_mul(b),
                Arith::Div if b == 0 => {
                    return Err(Fault::msg(format!("division by zero: {a} / 0")))
                }
                Arith::Div => a.checked_div(b),
                Arith::Rem if b == 0 => {
                    return Err(Fault::msg(format!("modulus by zero: {a} % 0")))
                }
                Arith::Rem => a.checked_rem(b),
            };
            result.map(Val::Int).ok_or_else(|| overflow(op, a, b))
        }
        (Arith::Rem, _, _) => Err(overload("%", left, right)),
        (_, Value::Float(a), Value::Float(b)) => Ok(Val::Float(match op {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            _ => a / b,
        })),
        (Arith::Add, Value::Str(a), Value::Str(b)) => {
            let mut text = String::with_capacity(a.len() + b.len());
            text.push_str(a);
            text.push_str(b);
            Ok(Val::of(Value::from(text)))
        }
        (Arith::Add, Value::List(a), Value::List(b)) => {
            let mut items = Vec::with_capacity(a.len() + b.len());
            items.extend(a.iter().cloned());
            items.extend(b.iter().cloned());
            Ok(Val::of(Value::List(Arc::new(items))))
        }
        // A list plus any iterable: a map adds its keys (CEL leaves their order unspecified;
        // here it is the map's sorted order).
        (Arith::Add, Value::List(a), Value::Map(b)) => {
            let mut items = Vec::with_capacity(a.len() + b.len());
            items.extend(a.iter().cloned());
            items.extend(b.keys().map(|key| Value::str(key)));
            Ok(Val::of(Value::List(Arc::new(items))))
        }
        _ => Err(overload(op.symbol(), left, right)),
    }
}

/// `needle in haystack`: list membership by CEL equality, or map key presence.
fn contains(haystack: &Value, needle: &Value) -> Result<bool, Fault> {
    match (haystack, needle) {
        (Value::List(items), _) => Ok(items.iter().any(|item| equals(item, needle))),
        (Value::Map(map), Value::Str(key)) => Ok(map.contains_key(&**key)),
        // Keys of another type that could key a map: never in ours, whose keys are strings.
        (Value::Map(_), Value::Int(_) | Value::Float(_) | Value::Bool(_)) => Ok(false),
        _ => Err(overload("in", needle, haystack)),
    }
}

/// `d` as an `i64`, when that is exact (as CEL indexes lists with whole doubles).
fn double_to_int_lossless(d: f64) -> Option<i64> {
    if d > i64::MIN as f64 && d < i64::MAX as f64 {
        let i = d as i64;
        (i as f64 == d).then_some(i)
    } else {
        None
    }
}

fn index_into<'x>(value: &'x Value, index: &Value) -> Result<&'x Value, Fault> {
    match value {
        Value::List(items) => {
            let position = match index {
                Value::Int(i) => Some(*i),
                Value::Float(d) => double_to_int_lossless(*d),
                other => return Err(overload("[]", value, other)),
            };
            position
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get(i))
                .ok_or_else(|| Fault::msg(format!("index out of bounds: {index:?}")))
        }
        Value::Map(map) => match index {
            Value::Str(key) => map.get(&**key).ok_or_else(|| no_such_key(index)),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Err(no_such_key(index)),
            other => Err(overload("[]", value, other)),
        },
        other => Err(overload("[]", other, index)),
    }
}

fn call1(func: Func1, arg: Val<'_>) -> Eval<'_> {
    let value = match (func, &*arg.view()) {
        (Func1::Size, Value::Str(s)) => Value::Int(s.chars().count() as i64),
        (Func1::Size, Value::List(items)) => Value::Int(items.len() as i64),
        (Func1::Size, Value::Map(map)) => Value::Int(map.len() as i64),
        (Func1::Int, Value::Int(_))
        | (Func1::Double, Value::Float(_))
        | (Func1::String, Value::Str(_)) => return Ok(arg),
        (Func1::Int, Value::Float(d)) => {
            // As CEL: only doubles strictly inside (i64::MIN, i64::MAX) convert, truncated.
            if *d > i64::MIN as f64 && *d < i64::MAX as f64 {
                Value::Int(*d as i64)
            } else {
                return Err(Fault::msg(format!("int({d:?}): integer overflow")));
            }
        }
        (Func1::Int, Value::Str(s)) => match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(error) => return Err(Fault::msg(format!("int({s:?}): {error}"))),
        },
        (Func1::Double, Value::Int(i)) => Value::Float(*i as f64),
        (Func1::Double, Value::Str(s)) => match s.parse::<f64>() {
            Ok(d) => Value::Float(d),
            Err(error) => return Err(Fault::msg(format!("double({s:?}): {error}"))),
        },
        (Func1::String, Value::Bool(b)) => Value::str(if *b { "true" } else { "false" }),
        (Func1::String, Value::Int(i)) => Value::from(i.to_string()),
        (Func1::String, Value::Float(d)) => Value::from(d.to_string()),
        (_, other) => {
            let name = match func {
                Func1::Size => "size",
                Func1::Int => "int",
                Func1::Double => "double",
                Func1::String => "string",
            };
            return Err(Fault::msg(format!(
                "no such overload: {name}({})",
                type_name(other)
            )));
        }
    };
    Ok(Val::of(value))
}

/// The static type of a node's results, when it is known at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Bool,
    Int,
    /// An int holding epoch milliseconds.
    Timestamp,
    Float,
    String,
    List,
    Map,
}

impl Ty {
    fn of(value: &Value) -> Option<Ty> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Ty::Bool,
            Value::Int(_) => Ty::Int,
            Value::Float(_) => Ty::Float,
            Value::Str(_) => Ty::String,
            Value::List(_) => Ty::List,
            Value::Map(_) => Ty::Map,
        })
    }

    /// Timestamps are ints to arithmetic.
    fn numeric(self) -> Ty {
        match self {
            Ty::Timestamp => Ty::Int,
            other => other,
        }
    }
}

impl Node {
    /// The type of this node's non-null results, when known statically.
    pub fn ty(&self, schema: Option<&Schema>) -> Option<Ty> {
        use dataflow_event::FieldType;
        match self {
            Node::Const(value) => Ty::of(value),
            Node::RowField(index, _) => match schema?.field(*index)?.ty {
                FieldType::Bool => Some(Ty::Bool),
                FieldType::Int => Some(Ty::Int),
                FieldType::Float => Some(Ty::Float),
                FieldType::String => Some(Ty::String),
                FieldType::Timestamp => Some(Ty::Timestamp),
                FieldType::Json => None,
            },
            Node::Event(Attr::Type | Attr::Id) => Some(Ty::String),
            Node::Event(Attr::Time | Attr::ProcessingTime) => Some(Ty::Timestamp),
            Node::Event(Attr::Headers) | Node::EventMap | Node::Payload => Some(Ty::Map),
            Node::Event(Attr::Key)
            | Node::ObjField(_)
            | Node::PayloadIndex(_)
            | Node::Select(..)
            | Node::Index(..)
            | Node::Interp(_) => None,
            Node::HasObjField(_)
            | Node::Has(..)
            | Node::Not(_)
            | Node::Eq(..)
            | Node::Ne(..)
            | Node::Cmp(..)
            | Node::And(..)
            | Node::Or(..)
            | Node::In(..)
            | Node::Call2(..) => Some(Ty::Bool),
            Node::List(_) => Some(Ty::List),
            Node::Map(_) => Some(Ty::Map),
            Node::Neg(operand) => match operand.ty(schema)?.numeric() {
                ty @ (Ty::Int | Ty::Float) => Some(ty),
                _ => None,
            },
            Node::Arith(op, left, right) => {
                let left = left.ty(schema)?.numeric();
                let right = right.ty(schema)?.numeric();
                match (op, left, right) {
                    (_, Ty::Int, Ty::Int) => Some(Ty::Int),
                    (Arith::Rem, _, _) => None,
                    (_, Ty::Float, Ty::Float) => Some(Ty::Float),
                    (Arith::Add, Ty::String, Ty::String) => Some(Ty::String),
                    (Arith::Add, Ty::List, Ty::List | Ty::Map) => Some(Ty::List),
                    _ => None,
                }
            }
            Node::Cond(_, then, otherwise) => {
                let then = then.ty(schema)?;
                (otherwise.ty(schema)? == then).then_some(then)
            }
            Node::Call1(Func1::Size | Func1::Int, _) => Some(Ty::Int),
            Node::Call1(Func1::Double, _) => Some(Ty::Float),
            Node::Call1(Func1::String, _) => Some(Ty::String),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

//! The bridge to the `cel` interpreter, which runs what the native compiler does not cover.
//!
//! The interpreter sees the event through a [`VariableResolver`] that converts, on demand, the
//! variables an expression names: `payload` (the payload as a map), `event` (the event as a
//! map) and each payload field as a bare variable. Its results are converted back to
//! [`Value`]s: strictly for a sub-expression whose value the native evaluator goes on with
//! (any value without an exact counterpart makes the whole expression run in the
//! interpreter), leniently for a whole expression's result.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelOptional, CelString,
    CelType, CelUInt, Kind,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, IdedExpr};
use dataflow_event::Value;

use super::context::{event_map, payload_map, Cx, Fault};

/// The standard CEL environment, built once: building it registers every standard function.
pub(super) fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// Resolves the variables of an expression from an event.
struct EventResolver<'a> {
    cx: Cx<'a>,
}

impl VariableResolver for EventResolver<'_> {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        let cx = &self.cx;
        match name {
            "payload" => Some(CowVal::Owned(to_cel_owned(&payload_map(cx)))),
            "event" => Some(CowVal::Owned(to_cel_owned(&event_map(cx.event)))),
            // The interpreter also tries dotted names (`a.b` as one variable): fields are only
            // ever reached through a plain identifier, as in the native evaluator.
            _ if name.contains('.') => None,
            _ => {
                let value = match (cx.object, cx.schema) {
                    (Some(object), _) => object.get(name)?,
                    (None, Some(schema)) => cx.row.get(schema.index_of(name)?)?,
                    (None, None) => return None,
                };
                Some(CowVal::Owned(to_cel(value)))
            }
        }
    }
}

// `EventResolver` holds plain references: it is `Send + Sync` as `VariableResolver` requires.
impl std::fmt::Debug for EventResolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventResolver")
    }
}

/// A value as a CEL value borrowing its strings.
fn to_cel(value: &Value) -> Box<dyn Val + '_> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Int(i) => Box::new(CelInt::from(*i)),
        Value::Float(f) => Box::new(CelDouble::from(*f)),
        Value::Str(s) => Box::new(CelString::from(&**s)),
        Value::List(items) => Box::new(CelList::from(items.iter().map(to_cel).collect::<Vec<_>>())),
        Value::Map(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(key, value)| {
                    (
                        CelMapKey::String(CelString::from(key.as_str())),
                        to_cel(value),
                    )
                })
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// A value as a CEL value owning its strings.
fn to_cel_owned(value: &Value) -> Box<dyn Val + 'static> {
    match value {
        Value::Str(s) => Box::new(CelString::from(s.to_string())),
        Value::List(items) => Box::new(CelList::from(
            items.iter().map(to_cel_owned).collect::<Vec<_>>(),
        )),
        Value::Map(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(key, value)| {
                    (
                        CelMapKey::String(CelString::from(key.clone())),
                        to_cel_owned(value),
                    )
                })
                .collect::<HashMap<_, _>>(),
        )),
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Int(i) => Box::new(CelInt::from(*i)),
        Value::Float(f) => Box::new(CelDouble::from(*f)),
    }
}

/// A CEL value with an exact [`Value`] counterpart, or `None`.
fn from_cel_strict(val: &dyn Val) -> Option<Value> {
    Some(match val.get_type().kind() {
        Kind::NullType => Value::Null,
        Kind::Boolean => Value::Bool(*val.downcast_ref::<CelBool>()?.inner()),
        Kind::Int => Value::Int(*val.downcast_ref::<CelInt>()?.inner()),
        Kind::Double => Value::Float(*val.downcast_ref::<CelDouble>()?.inner()),
        Kind::String => Value::str(val.downcast_ref::<CelString<'_>>()?.inner()),
        Kind::List => Value::List(Arc::new(
            val.downcast_ref::<CelList<'_>>()?
                .inner()
                .iter()
                .map(|item| from_cel_strict(item.as_ref()))
                .collect::<Option<Vec<_>>>()?,
        )),
        Kind::Map => Value::Map(Arc::new(
            val.downcast_ref::<CelMap<'_>>()?
                .inner()
                .iter()
                .map(|(key, value)| match key {
                    CelMapKey::String(key) => {
                        Some((key.inner().to_string(), from_cel_strict(value.as_ref())?))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?,
        )),
        _ => return None,
    })
}

/// A CEL value as the [`Value`] closest to it: a `uint` as an int (when it fits), a type as
/// its name, an optional as its value (or null), map keys as their text.
fn from_cel_lenient(val: &dyn Val) -> Result<Value, String> {
    let unsupported = || {
        format!(
            "a result of type {} has no value form",
            val.get_type().name()
        )
    };
    Ok(match val.get_type().kind() {
        Kind::UInt => {
            let u = *val
                .downcast_ref::<CelUInt>()
                .ok_or_else(unsupported)?
                .inner();
            Value::Int(
                i64::try_from(u).map_err(|_| format!("uint result {u} does not fit an int"))?,
            )
        }
        Kind::Type => Value::str(
            val.downcast_ref::<CelType>()
                .ok_or_else(unsupported)?
                .name(),
        ),
        Kind::Opaque => match val.downcast_ref::<CelOptional<'_>>() {
            Some(optional) => match optional.option() {
                Some(inner) => from_cel_lenient(inner)?,
                None => Value::Null,
            },
            None => return Err(unsupported()),
        },
        Kind::List => Value::List(Arc::new(
            val.downcast_ref::<CelList<'_>>()
                .ok_or_else(unsupported)?
                .inner()
                .iter()
                .map(|item| from_cel_lenient(item.as_ref()))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Kind::Map => Value::Map(Arc::new(
            val.downcast_ref::<CelMap<'_>>()
                .ok_or_else(unsupported)?
                .inner()
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        CelMapKey::String(s) => s.inner().to_string(),
                        CelMapKey::Int(i) => i.inner().to_string(),
                        CelMapKey::UInt(u) => u.inner().to_string(),
                        CelMapKey::Bool(b) => b.inner().to_string(),
                    };
                    Ok((key, from_cel_lenient(value.as_ref())?))
                })
                .collect::<Result<_, String>>()?,
        )),
        _ => from_cel_strict(val).ok_or_else(unsupported)?,
    })
}

/// Runs `run` with a context resolving the event's variables, turning a panic of the
/// interpreter into an error.
fn with_context<T>(
    cx: &Cx<'_>,
    run: impl FnOnce(&Context<'_, '_>) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let resolver = EventResolver { cx: *cx };
    let mut context = Context::with_env(Arc::clone(env()));
    context.set_variable_resolver(&resolver);
    catch_unwind(AssertUnwindSafe(|| run(&context)))
        .unwrap_or_else(|_| Err(Fault::msg("the CEL interpreter failed unexpectedly")))
}

/// The CEL name of an interpreter value's type.
fn value_type(value: &cel::Value) -> String {
    match value {
        cel::Value::Float(_) => "double".to_string(),
        cel::Value::Null => "null_type".to_string(),
        other => other.type_of().to_string(),
    }
}

/// An interpreter error, worded as the native evaluator words the same failures.
fn execution_error(error: ExecutionError) -> Fault {
    let message = match error {
        ExecutionError::UnsupportedBinaryOperator(op, left, right) => {
            let symbol = match op {
                "add" => "+",
                "sub" => "-",
                "mul" => "*",
                "div" => "/",
                "rem" => "%",
                other => other,
            };
            format!(
                "no such overload: {} {symbol} {}",
                value_type(&left),
                value_type(&right)
            )
        }
        ExecutionError::NoSuchOverload(overload) => {
            let types = overload.argument_types();
            match (overload.is_member_function(), types.split_first()) {
                (true, Some((receiver, args))) => format!(
                    "no such overload: {receiver}.{}({})",
                    overload.function(),
                    args.join(", ")
                ),
                _ => format!(
                    "no such overload: {}({})",
                    overload.function(),
                    types.join(", ")
                ),
            }
        }
        ExecutionError::ValuesNotComparable(left, right) => {
            format!("{left:?} cannot be compared to {right:?}")
        }
        ExecutionError::NoSuchKey(key) => format!("no such key: {key}"),
        ExecutionError::UndeclaredReference(name) => format!("no field `{name}`"),
        ExecutionError::DivisionByZero(value) => format!("division by zero: {value:?} / 0"),
        ExecutionError::RemainderByZero(value) => format!("modulus by zero: {value:?} % 0"),
        ExecutionError::Overflow(op, left, right) => {
            format!("integer overflow in {op}({left:?}, {right:?})")
        }
        other => other.to_string(),
    };
    Fault::msg(message)
}

/// Evaluates a sub-expression of a natively compiled expression.
pub(super) fn eval_node(expr: &IdedExpr, cx: &Cx<'_>) -> Result<Value, Fault> {
    with_context(cx, |context| {
        let val = cel::Value::resolve_val(expr, context).map_err(execution_error)?;
        from_cel_strict(val.as_ref()).ok_or(Fault::Unrepresentable)
    })
}

/// Evaluates a whole expression.
pub(super) fn eval_root(expr: &IdedExpr, cx: &Cx<'_>) -> Result<Value, Fault> {
    with_context(cx, |context| {
        let val = cel::Value::resolve_val(expr, context).map_err(execution_error)?;
        from_cel_lenient(val.as_ref()).map_err(Fault::msg)
    })
}

/// Whether `expr`, an identifier or a chain of field selections on one, names something the
/// interpreter knows without any variable: a type such as `int`.
pub(super) fn names_constant(expr: &IdedExpr) -> bool {
    let context = Context::with_env(Arc::clone(env()));
    catch_unwind(AssertUnwindSafe(|| {
        cel::Value::resolve_val(expr, &context).is_ok()
    }))
    .unwrap_or(false)
}

/// Whether a call of `name` (`name(...)`, or `target.name(...)` when `member`) reaches a function
/// the interpreter declares.
pub(super) fn function_declared(name: &str, member: bool) -> bool {
    use cel::common::ast::{CallExpr, Expr, LiteralValue};
    let context = Context::with_env(Arc::clone(env()));
    let probe = |func_name: String, target: Option<Box<IdedExpr>>| {
        let call = IdedExpr {
            id: 0,
            expr: Expr::Call(CallExpr {
                func_name,
                target,
                args: Vec::new(),
            }),
        };
        // No arguments: a declared function fails to find an overload, an undeclared one is an
        // undeclared reference.
        let result = catch_unwind(AssertUnwindSafe(|| {
            cel::Value::resolve_val(&call, &context).map(|_| ())
        }));
        !matches!(
            result,
            Ok(Err(ExecutionError::UndeclaredReference(_))) | Err(_)
        )
    };
    let null = || {
        Some(Box::new(IdedExpr {
            id: 0,
            expr: Expr::Literal(LiteralValue::Null),
        }))
    };
    probe(name.to_string(), if member { null() } else { None })
}

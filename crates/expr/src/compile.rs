//! From the `cel` AST to [`Node`]s: name resolution against the layout, validation, and the
//! choice, node by node, between native evaluation and the interpreter.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::common::ast::{
    operators, CallExpr, EntryExpr, Expr as Ast, LiteralValue, SelectExpr, SourceInfo,
};
use cel::IdedExpr;
use dataflow_event::{Event, Layout, Schema, Value};

use super::context::{Attr, Cx};
use super::eval::{Arith, Cmp, Func1, Func2, Node};
use super::interp;

/// A compile error message (the caller adds the expression).
pub(super) type CompileResult<T> = std::result::Result<T, String>;

/// A position in the source, as a byte offset, when known.
type At = Option<usize>;

/// The deepest expression accepted.
pub(super) const MAX_DEPTH: usize = 100;

/// The deepest expression accepted when the interpreter may run it: its recursion takes tens
/// of kilobytes of stack a level in debug builds.
pub(super) const MAX_INTERPRETED_DEPTH: usize = 32;

pub(super) struct Compiler<'s> {
    source: &'s str,
    info: &'s SourceInfo,
    layout: &'s Layout,
    /// The payload fields the expression names.
    pub fields: BTreeSet<String>,
    /// Whether the expression reads the payload as a whole (`payload`, `payload[expr]`).
    pub whole_payload: bool,
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Ast::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn ident(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Ast::Ident(name) => Some(name),
        _ => None,
    }
}

/// The identifier a chain of field selections starts from: `a` for `a.b.c`.
fn chain_root(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Ast::Ident(name) => Some(name),
        Ast::Select(select) if !select.test => chain_root(&select.operand),
        _ => None,
    }
}

/// The qualified name a chain of field selections spells: `a.b.c`.
fn qualified_name(expr: &IdedExpr) -> Option<String> {
    match &expr.expr {
        Ast::Ident(name) => Some(name.clone()),
        Ast::Select(select) if !select.test => Some(format!(
            "{}.{}",
            qualified_name(&select.operand)?,
            select.field
        )),
        _ => None,
    }
}

/// Whether `call` is `a.b.f(...)` calling the function `a.b.f` (as `optional.of(x)`), whose
/// target is a namespace rather than a value.
fn namespaced(call: &CallExpr) -> bool {
    call.target
        .as_deref()
        .and_then(qualified_name)
        .is_some_and(|target| {
            interp::function_declared(&format!("{target}.{}", call.func_name), false)
        })
}

/// Operators (`_+_`, `!_`, `@in`...) as opposed to named functions.
fn is_operator(name: &str) -> bool {
    name.starts_with('_')
        || name.starts_with('@')
        || name == operators::LOGICAL_NOT
        || name == operators::NEGATE
}

/// The depth of the deepest node of `expr`, counted without recursion, and that node's id.
pub(super) fn depth(expr: &IdedExpr) -> (usize, u64) {
    let mut deepest = (0, expr.id);
    let mut stack = vec![(expr, 1)];
    while let Some((expr, depth)) = stack.pop() {
        if depth > deepest.0 {
            deepest = (depth, expr.id);
        }
        for_each_child(expr, &mut |child| stack.push((child, depth + 1)));
    }
    deepest
}

/// Calls `visit` on each direct sub-expression of `expr`.
fn for_each_child<'e>(expr: &'e IdedExpr, visit: &mut dyn FnMut(&'e IdedExpr)) {
    match &expr.expr {
        Ast::Unspecified | Ast::Ident(_) | Ast::Literal(_) => {}
        Ast::Call(call) => {
            if let Some(target) = &call.target {
                visit(target);
            }
            call.args.iter().for_each(&mut *visit);
        }
        Ast::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(part);
            }
        }
        Ast::List(list) => list.elements.iter().for_each(&mut *visit),
        Ast::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(entry) => {
                        visit(&entry.key);
                        visit(&entry.value);
                    }
                    EntryExpr::StructField(field) => visit(&field.value),
                }
            }
        }
        Ast::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(entry) => {
                        visit(&entry.key);
                        visit(&entry.value);
                    }
                    EntryExpr::StructField(field) => visit(&field.value),
                }
            }
        }
        Ast::Select(select) => visit(&select.operand),
    }
}

/// The entries of a map literal whose keys are all string literals, each once (what
/// [`Node::Map`] covers; other keys and repeated keys are the interpreter's).
fn string_keys(map: &cel::common::ast::MapExpr) -> Option<Vec<(&str, &IdedExpr)>> {
    let mut entries = Vec::with_capacity(map.entries.len());
    let mut seen = BTreeSet::new();
    for entry in &map.entries {
        let EntryExpr::MapEntry(entry) = &entry.expr else {
            return None;
        };
        if entry.optional {
            return None;
        }
        let Ast::Literal(LiteralValue::String(key)) = &entry.key.expr else {
            return None;
        };
        let key: &str = key.inner();
        if !seen.insert(key) {
            return None;
        }
        entries.push((key, &entry.value));
    }
    Some(entries)
}

/// Whether `expr` contains a literal with no [`Value`] form (`1u`, `b'..'`): such expressions
/// run in the interpreter as a whole.
pub(super) fn has_foreign_literal(expr: &IdedExpr) -> bool {
    let mut found = false;
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        if let Ast::Literal(LiteralValue::UInt(_) | LiteralValue::Bytes(_)) = &expr.expr {
            found = true;
        }
        for_each_child(expr, &mut |child| stack.push(child));
    }
    found
}

/// Whether `expr` contains something the interpreter cannot evaluate at all.
pub(super) fn has_unspecified(expr: &IdedExpr) -> bool {
    let mut found = false;
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match &expr.expr {
            Ast::Unspecified => found = true,
            Ast::Map(map) => {
                found |= map
                    .entries
                    .iter()
                    .any(|entry| matches!(entry.expr, EntryExpr::StructField(_)));
            }
            _ => {}
        }
        for_each_child(expr, &mut |child| stack.push(child));
    }
    found
}

impl<'s> Compiler<'s> {
    pub fn new(source: &'s str, info: &'s SourceInfo, layout: &'s Layout) -> Compiler<'s> {
        Compiler {
            source,
            info,
            layout,
            fields: BTreeSet::new(),
            whole_payload: false,
        }
    }

    fn schema(&self) -> Option<&'s Schema> {
        self.layout.schema().map(|schema| &**schema)
    }

    /// Where `expr` starts in the source (a byte offset).
    fn at(&self, expr: &IdedExpr) -> At {
        self.info
            .offset_for(expr.id)
            .map(|(start, _)| start as usize)
    }

    /// Where the field of a selection is written: after the dot of `a.field`, at the start
    /// of the operand of `has(a.field)`.
    fn at_field(&self, expr: &IdedExpr, select: &SelectExpr) -> At {
        if select.test {
            self.at(&select.operand)
        } else {
            self.at(expr).map(|dot| dot + 1)
        }
    }

    /// `at` as `line L, column C` (1-based, in characters).
    fn position(&self, at: At) -> String {
        let Some(start) = at else {
            return "unknown position".to_string();
        };
        let (mut line, mut column) = (1, 1);
        let before = self
            .source
            .char_indices()
            .take_while(|(offset, _)| *offset < start);
        for (_, c) in before {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        format!("line {line}, column {column}")
    }

    fn fail<T>(&self, at: At, message: impl std::fmt::Display) -> CompileResult<T> {
        Err(format!("{message} (at {})", self.position(at)))
    }

    fn unknown_field<T>(&self, at: At, name: &str, schema: &Schema) -> CompileResult<T> {
        let available: Vec<&str> = schema.fields().iter().map(|f| f.name.as_str()).collect();
        self.fail(
            at,
            format!(
                "unknown field `{name}`: the payload has fields {}",
                if available.is_empty() {
                    "(none)".to_string()
                } else {
                    available.join(", ")
                }
            ),
        )
    }

    /// The payload field `name`, named as `payload.name` or `payload["name"]`.
    fn payload_field(&mut self, at: At, name: &str) -> CompileResult<Node> {
        match self.schema() {
            Some(schema) => match schema.index_of(name) {
                Some(index) => {
                    self.fields.insert(name.to_string());
                    Ok(Node::RowField(index, name.into()))
                }
                None => self.unknown_field(at, name, schema),
            },
            None => {
                self.fields.insert(name.to_string());
                Ok(Node::ObjField(name.into()))
            }
        }
    }

    /// `has(payload.name)`.
    fn has_payload_field(&mut self, at: At, name: &str) -> CompileResult<Node> {
        match self.payload_field(at, name)? {
            // Every field of a row is present (perhaps null).
            Node::RowField(..) => Ok(Node::Const(Value::Bool(true))),
            _ => Ok(Node::HasObjField(name.into())),
        }
    }

    /// A bare identifier other than `payload` and `event`: a payload field, unless (on a row
    /// layout, or always on an object one, where the field may be missing) it names a CEL
    /// type such as `int`, which the interpreter resolves.
    fn bare_name(&mut self, expr: &IdedExpr, name: &str) -> CompileResult<Node> {
        match self.schema() {
            Some(schema) => match schema.index_of(name) {
                Some(index) => {
                    self.fields.insert(name.to_string());
                    Ok(Node::RowField(index, name.into()))
                }
                None if interp::names_constant(expr) => Ok(self.interp_unchecked(expr)),
                None => self.unknown_field(self.at(expr), name, schema),
            },
            None => {
                self.fields.insert(name.to_string());
                if interp::names_constant(expr) {
                    Ok(self.interp_unchecked(expr))
                } else {
                    Ok(Node::ObjField(name.into()))
                }
            }
        }
    }

    fn attr(&self, at: At, name: &str) -> CompileResult<Attr> {
        match Attr::named(name) {
            Some(attr) => Ok(attr),
            None => {
                let names: Vec<String> = Attr::ALL
                    .iter()
                    .map(|(n, _)| format!("event.{n}"))
                    .collect();
                self.fail(
                    at,
                    format!(
                        "unknown event attribute `event.{name}`: expected one of {}",
                        names.join(", ")
                    ),
                )
            }
        }
    }

    /// Whether a chain `a.b.c` whose root is no field stands for a constant (a qualified
    /// type name).
    fn names_constant_chain(&self, expr: &IdedExpr, bound: &[String]) -> bool {
        let Some(root) = chain_root(expr) else {
            return false;
        };
        if root == "payload" || root == "event" || bound.iter().any(|b| b == root) {
            return false;
        }
        if self
            .schema()
            .is_some_and(|schema| schema.index_of(root).is_some())
        {
            return false;
        }
        interp::names_constant(expr)
    }

    fn interp_unchecked(&self, expr: &IdedExpr) -> Node {
        Node::Interp(Arc::new(expr.clone()))
    }

    /// `expr`, to run in the interpreter, after checking the names it uses.
    pub fn interp(&mut self, expr: &IdedExpr) -> CompileResult<Node> {
        self.validate(expr, &mut Vec::new())?;
        Ok(self.interp_unchecked(expr))
    }

    /// Compiles `expr` natively where possible.
    pub fn compile(&mut self, expr: &IdedExpr) -> CompileResult<Node> {
        let node = match &expr.expr {
            Ast::Literal(literal) => {
                return Ok(match literal {
                    LiteralValue::Boolean(b) => Node::Const(Value::Bool(*b.inner())),
                    LiteralValue::Int(i) => Node::Const(Value::Int(*i.inner())),
                    LiteralValue::Double(d) => Node::Const(Value::Float(*d.inner())),
                    LiteralValue::String(s) => Node::Const(Value::str(s.inner())),
                    LiteralValue::Null => Node::Const(Value::Null),
                    LiteralValue::UInt(_) | LiteralValue::Bytes(_) => self.interp_unchecked(expr),
                })
            }
            Ast::Ident(name) => {
                return match name.as_str() {
                    "payload" => {
                        self.whole_payload = true;
                        Ok(Node::Payload)
                    }
                    "event" => Ok(Node::EventMap),
                    _ => self.bare_name(expr, name),
                }
            }
            Ast::Select(select) => match self.select(expr, select)? {
                Some(node) => node,
                None => return self.interp(expr),
            },
            Ast::Call(call) => match self.call(expr, call)? {
                Some(node) => node,
                None => return self.interp(expr),
            },
            Ast::List(list) if list.optional_indices.is_empty() => Node::List(
                list.elements
                    .iter()
                    .map(|item| self.compile(item))
                    .collect::<CompileResult<_>>()?,
            ),
            Ast::Map(map) => match string_keys(map) {
                Some(keys) => {
                    let mut entries = Vec::with_capacity(keys.len());
                    for (key, value) in keys {
                        entries.push((Box::from(key), self.compile(value)?));
                    }
                    Node::Map(entries)
                }
                None => return self.interp(expr),
            },
            _ => return self.interp(expr),
        };
        Ok(self.finish(expr, node))
    }

    /// Turns a node whose operands all run in the interpreter into one interpreted node, and
    /// folds one whose operands are all constants.
    fn finish(&self, expr: &IdedExpr, node: Node) -> Node {
        let children = node.children();
        if !children.is_empty()
            && children
                .iter()
                .all(|child| matches!(child, Node::Interp(_)))
        {
            return self.interp_unchecked(expr);
        }
        let constant = children.iter().all(|child| matches!(child, Node::Const(_)));
        if constant && (!children.is_empty() || matches!(node, Node::List(_) | Node::Map(_))) {
            let event = Event::default();
            let cx = Cx {
                event: &event,
                row: &[],
                object: None,
                schema: None,
            };
            // A constant expression that fails fails on every event: it is left to fail then.
            if let Ok(value) = node.eval(&cx) {
                return Node::Const(value.into_value());
            }
        }
        node
    }

    /// `operand.field` and `has(operand.field)`; `None` to interpret.
    fn select(&mut self, expr: &IdedExpr, select: &SelectExpr) -> CompileResult<Option<Node>> {
        let field = select.field.as_str();
        match ident(&select.operand) {
            Some("payload") if select.test => {
                return self
                    .has_payload_field(self.at_field(expr, select), field)
                    .map(Some)
            }
            Some("payload") => {
                return self
                    .payload_field(self.at_field(expr, select), field)
                    .map(Some)
            }
            Some("event") => {
                let attr = self.attr(self.at_field(expr, select), field)?;
                return Ok(Some(if select.test {
                    Node::Const(Value::Bool(true))
                } else {
                    Node::Event(attr)
                }));
            }
            _ => {}
        }
        if !select.test && self.names_constant_chain(expr, &[]) {
            return Ok(None);
        }
        let operand = Box::new(self.compile(&select.operand)?);
        Ok(Some(if select.test {
            Node::Has(operand, field.into())
        } else {
            Node::Select(operand, field.into())
        }))
    }

    fn binary(&mut self, args: &[IdedExpr]) -> CompileResult<(Box<Node>, Box<Node>)> {
        Ok((
            Box::new(self.compile(&args[0])?),
            Box::new(self.compile(&args[1])?),
        ))
    }

    /// Checks the arguments of the functions compiled natively. Calls with the wrong number of
    /// arguments fail on every event: they are rejected here.
    fn check_arity(&self, expr: &IdedExpr, call: &CallExpr) -> CompileResult<()> {
        let name = call.func_name.as_str();
        let member = call.target.is_some();
        let count = call.args.len();
        let ok = match name {
            "size" => (member && count == 0) || (!member && count == 1),
            "int" | "double" | "string" => !member && count == 1,
            "contains" | "startsWith" | "endsWith" => member && count == 1,
            _ => return Ok(()),
        };
        if ok {
            return Ok(());
        }
        let usage = match name {
            "size" => "`size(x)` or `x.size()`".to_string(),
            "int" | "double" | "string" => format!("`{name}(x)`, with one argument"),
            _ => format!("`s.{name}(t)`, a method of a string with one argument"),
        };
        self.fail(
            self.at(expr),
            format!("wrong use of `{name}`: write {usage}"),
        )
    }

    /// Rejects calls of functions the interpreter does not declare.
    fn check_declared(&self, expr: &IdedExpr, call: &CallExpr) -> CompileResult<()> {
        let name = call.func_name.as_str();
        if is_operator(name) || namespaced(call) {
            return Ok(());
        }
        if interp::function_declared(name, call.target.is_some()) {
            Ok(())
        } else {
            self.fail(self.at(expr), format!("unknown function `{name}`"))
        }
    }

    /// A call; `None` to interpret.
    fn call(&mut self, expr: &IdedExpr, call: &CallExpr) -> CompileResult<Option<Node>> {
        self.check_arity(expr, call)?;
        let args = call.args.as_slice();
        let name = call.func_name.as_str();
        let Some(target) = call.target.as_deref() else {
            let node = match (name, args.len()) {
                (operators::LOGICAL_AND, 2) => {
                    let (a, b) = self.binary(args)?;
                    Node::And(a, b)
                }
                (operators::LOGICAL_OR, 2) => {
                    let (a, b) = self.binary(args)?;
                    Node::Or(a, b)
                }
                (operators::CONDITIONAL, 3) => Node::Cond(
                    Box::new(self.compile(&args[0])?),
                    Box::new(self.compile(&args[1])?),
                    Box::new(self.compile(&args[2])?),
                ),
                (operators::LOGICAL_NOT, 1) => Node::Not(Box::new(self.compile(&args[0])?)),
                (operators::NEGATE, 1) => Node::Neg(Box::new(self.compile(&args[0])?)),
                (operators::EQUALS, 2) => {
                    let (a, b) = self.binary(args)?;
                    Node::Eq(a, b)
                }
                (operators::NOT_EQUALS, 2) => {
                    let (a, b) = self.binary(args)?;
                    Node::Ne(a, b)
                }
                (operators::IN, 2) => {
                    let (a, b) = self.binary(args)?;
                    Node::In(a, b)
                }
                (operators::INDEX, 2) => return self.index(expr, &args[0], &args[1]).map(Some),
                ("size", 1) => Node::Call1(Func1::Size, Box::new(self.compile(&args[0])?)),
                ("int", 1) => Node::Call1(Func1::Int, Box::new(self.compile(&args[0])?)),
                ("double", 1) => Node::Call1(Func1::Double, Box::new(self.compile(&args[0])?)),
                ("string", 1) => Node::Call1(Func1::String, Box::new(self.compile(&args[0])?)),
                (_, 2) => {
                    let op = match name {
                        operators::ADD => Some(Arith::Add),
                        operators::SUBSTRACT => Some(Arith::Sub),
                        operators::MULTIPLY => Some(Arith::Mul),
                        operators::DIVIDE => Some(Arith::Div),
                        operators::MODULO => Some(Arith::Rem),
                        _ => None,
                    };
                    let cmp = match name {
                        operators::LESS => Some(Cmp::Lt),
                        operators::LESS_EQUALS => Some(Cmp::Le),
                        operators::GREATER => Some(Cmp::Gt),
                        operators::GREATER_EQUALS => Some(Cmp::Ge),
                        _ => None,
                    };
                    match (op, cmp) {
                        (Some(op), _) => {
                            let (a, b) = self.binary(args)?;
                            Node::Arith(op, a, b)
                        }
                        (None, Some(cmp)) => {
                            let (a, b) = self.binary(args)?;
                            Node::Cmp(cmp, a, b)
                        }
                        (None, None) => {
                            self.check_declared(expr, call)?;
                            return Ok(None);
                        }
                    }
                }
                _ => {
                    self.check_declared(expr, call)?;
                    return Ok(None);
                }
            };
            return Ok(Some(node));
        };
        let node = match (name, args.len()) {
            ("size", 0) => Node::Call1(Func1::Size, Box::new(self.compile(target)?)),
            ("contains" | "startsWith" | "endsWith", 1) => {
                let func = match name {
                    "contains" => Func2::Contains,
                    "startsWith" => Func2::StartsWith,
                    _ => Func2::EndsWith,
                };
                // The interpreter evaluates the argument before the receiver; the order only
                // decides which of two errors is reported.
                let receiver = Box::new(self.compile(target)?);
                Node::Call2(func, receiver, Box::new(self.compile(&args[0])?))
            }
            _ => {
                self.check_declared(expr, call)?;
                return Ok(None);
            }
        };
        Ok(Some(node))
    }

    /// `operand[index]`.
    fn index(
        &mut self,
        expr: &IdedExpr,
        operand: &IdedExpr,
        index: &IdedExpr,
    ) -> CompileResult<Node> {
        match (ident(operand), string_literal(index)) {
            (Some("payload"), Some(name)) => return self.payload_field(self.at(expr), name),
            (Some("payload"), None) => {
                self.whole_payload = true;
                let index = self.compile(index)?;
                return Ok(self.finish(expr, Node::PayloadIndex(Box::new(index))));
            }
            (Some("event"), Some(name)) => return Ok(Node::Event(self.attr(self.at(expr), name)?)),
            _ => {}
        }
        let operand = Box::new(self.compile(operand)?);
        let index = Box::new(self.compile(index)?);
        Ok(self.finish(expr, Node::Index(operand, index)))
    }

    /// Checks the names an interpreted `expr` uses, and records the payload fields it reads.
    /// `bound` holds the variables of the comprehensions around `expr`.
    fn validate(&mut self, expr: &IdedExpr, bound: &mut Vec<String>) -> CompileResult<()> {
        let is_bound = |bound: &Vec<String>, name: &str| bound.iter().any(|b| b == name);
        match &expr.expr {
            Ast::Literal(_) => Ok(()),
            Ast::Unspecified => self.fail(self.at(expr), "unsupported expression"),
            Ast::Ident(name) => {
                if !is_bound(bound, name) {
                    match name.as_str() {
                        "payload" => self.whole_payload = true,
                        "event" => {}
                        _ => {
                            self.bare_name(expr, name)?;
                        }
                    }
                }
                Ok(())
            }
            Ast::Select(select) => {
                match ident(&select.operand) {
                    Some("payload") if !is_bound(bound, "payload") => {
                        let at = self.at_field(expr, select);
                        return self.payload_field(at, &select.field).map(|_| ());
                    }
                    Some("event") if !is_bound(bound, "event") => {
                        return self
                            .attr(self.at_field(expr, select), &select.field)
                            .map(|_| ())
                    }
                    _ => {}
                }
                if !select.test && self.names_constant_chain(expr, bound) {
                    return Ok(());
                }
                self.validate(&select.operand, bound)
            }
            Ast::Call(call) => {
                if call.func_name == operators::INDEX && call.args.len() == 2 {
                    let operand = ident(&call.args[0]).filter(|name| !is_bound(bound, name));
                    if let (Some("payload"), Some(name)) = (operand, string_literal(&call.args[1]))
                    {
                        return self.payload_field(self.at(expr), name).map(|_| ());
                    }
                    if let (Some("event"), Some(name)) = (operand, string_literal(&call.args[1])) {
                        return self.attr(self.at(expr), name).map(|_| ());
                    }
                }
                self.check_arity(expr, call)?;
                self.check_declared(expr, call)?;
                if let Some(target) = call.target.as_deref().filter(|_| !namespaced(call)) {
                    self.validate(target, bound)?;
                }
                for arg in &call.args {
                    self.validate(arg, bound)?;
                }
                Ok(())
            }
            Ast::Comprehension(c) => {
                self.validate(&c.iter_range, bound)?;
                self.validate(&c.accu_init, bound)?;
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.iter().cloned());
                bound.push(c.accu_var.clone());
                let result = [&c.loop_cond, &c.loop_step, &c.result]
                    .into_iter()
                    .try_for_each(|part| self.validate(part, bound));
                bound.truncate(depth);
                result
            }
            Ast::List(_) | Ast::Map(_) | Ast::Struct(_) => {
                let mut children = Vec::new();
                for_each_child(expr, &mut |child| children.push(child));
                children
                    .into_iter()
                    .try_for_each(|child| self.validate(child, bound))
            }
        }
    }
}

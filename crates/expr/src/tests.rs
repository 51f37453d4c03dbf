use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Schema, Value};

use super::Expr;
use crate::ExprError;

fn list(items: Vec<Value>) -> Value {
    Value::List(Arc::new(items))
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(Arc::new(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    ))
}

fn s(text: &str) -> Value {
    Value::str(text)
}

/// The fields of the test events, in schema order. `note` is a nullable field left null, and
/// absent from the object event.
fn fields() -> Vec<(&'static str, FieldType, Value)> {
    vec![
        ("price", FieldType::Float, Value::Float(120.5)),
        ("qty", FieldType::Int, Value::Int(3)),
        ("channel", FieldType::String, s("web")),
        ("vip", FieldType::Bool, Value::Bool(true)),
        ("tags", FieldType::Json, list(vec![s("sale"), s("new")])),
        (
            "user",
            FieldType::Json,
            map(vec![
                ("id", s("u1")),
                ("age", Value::Int(30)),
                ("address", map(vec![("city", s("Paris"))])),
            ]),
        ),
        ("ts", FieldType::Timestamp, Value::Int(1_700_000_000_000)),
        ("big", FieldType::Int, Value::Int(i64::MAX)),
        ("nan", FieldType::Float, Value::Float(f64::NAN)),
        ("note", FieldType::String, Value::Null),
    ]
}

fn schema() -> Schema {
    // (`note` would be nullable, but `dataflow_event` does not export `Field`: a row may hold
    // null in any field anyway.)
    Schema::new(fields().into_iter().map(|(name, ty, _)| (name, ty))).expect("valid schema")
}

fn row_layout() -> Layout {
    Layout::Row(Arc::new(schema()))
}

fn with_metadata(mut event: Event) -> Event {
    event.kind = Some(Arc::from("click"));
    event.event_time = 1000;
    event.processing_time = 2000;
    event.key = Some(s("k1"));
    event.headers = Some(Box::new(vec![(Arc::from("trace"), Arc::from("t1"))]));
    event
}

fn row_event() -> Event {
    with_metadata(Event::row(
        0,
        fields().into_iter().map(|(_, _, v)| v).collect(),
    ))
}

fn object_event() -> Event {
    let object: BTreeMap<String, Value> = fields()
        .into_iter()
        .filter(|(name, _, _)| *name != "note")
        .map(|(name, _, v)| (name.to_string(), v))
        .collect();
    with_metadata(Event::object(0, object))
}

#[derive(Debug)]
enum Want {
    /// This value.
    Is(Value),
    /// An evaluation error whose message contains this.
    Fails(&'static str),
}

use Want::{Fails, Is};

fn int(i: i64) -> Want {
    Is(Value::Int(i))
}

fn float(f: f64) -> Want {
    Is(Value::Float(f))
}

fn text(t: &str) -> Want {
    Is(s(t))
}

fn bool(b: bool) -> Want {
    Is(Value::Bool(b))
}

/// Compiles `source` for `layout`, evaluates it on `event`, checks the outcome, and checks that
/// the interpreter alone gives the same outcome.
fn check(source: &str, layout: &Layout, event: &Event, want: &Want) {
    let expr = Expr::compile(source, layout)
        .unwrap_or_else(|error| panic!("`{source}` does not compile: {error}"));
    let native = expr.eval(event);
    match (want, &native) {
        (Is(expected), Ok(value)) => assert_eq!(value, expected, "`{source}`"),
        (
            Fails(part),
            Err(ExprError::Eval {
                message,
                expression,
            }),
        ) => {
            assert_eq!(expression, source);
            assert!(
                message.contains(part),
                "`{source}`: error `{message}` does not mention `{part}`"
            );
        }
        _ => panic!("`{source}`: expected {want:?}, got {native:?}"),
    }
    let interpreted = expr.eval_interpreted(event);
    match (&native, &interpreted) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "`{source}`: native and interpreter differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("`{source}`: native {native:?}, interpreter {interpreted:?}"),
    }
    if let Ok(Value::Bool(b)) = &native {
        assert_eq!(expr.eval_bool(event).ok(), Some(*b), "`{source}`");
    } else {
        assert!(expr.eval_bool(event).is_err(), "`{source}` as a bool");
    }
}

fn check_row(source: &str, want: Want) {
    check(source, &row_layout(), &row_event(), &want);
}

fn check_object(source: &str, want: Want) {
    check(source, &Layout::Object, &object_event(), &want);
}

fn check_both(source: &str, want: Want) {
    check_row(
        source,
        match &want {
            Is(v) => Is(v.clone()),
            Fails(part) => Fails(part),
        },
    );
    check_object(source, want);
}

#[test]
fn literals() {
    check_both("42", int(42));
    check_both("-7", int(-7));
    check_both("2.5", float(2.5));
    check_both("1e3", float(1000.0));
    check_both("'text'", text("text"));
    check_both("\"double quoted\"", text("double quoted"));
    check_both("true", bool(true));
    check_both("null", Is(Value::Null));
    check_both(
        "[1, 'a', true]",
        Is(list(vec![Value::Int(1), s("a"), Value::Bool(true)])),
    );
    check_both("[]", Is(list(vec![])));
    check_both(
        "[qty, price]",
        Is(list(vec![Value::Int(3), Value::Float(120.5)])),
    );
    check_both("-9223372036854775808", int(i64::MIN));
}

#[test]
fn payload_fields_by_every_spelling() {
    check_both("price", float(120.5));
    check_both("payload.price", float(120.5));
    check_both("payload['price']", float(120.5));
    check_both("payload[\"qty\"]", int(3));
    check_both("channel", text("web"));
    check_both("vip", bool(true));
    check_both("ts", int(1_700_000_000_000));
    check_both("payload['ch' + 'annel']", text("web"));
    check_both("payload[1]", Fails("no such key"));
    check_both("size(payload) >= 9", bool(true));
    check_both("payload.user.id", text("u1"));
}

#[test]
fn nested_selection_and_index() {
    check_both("user.id", text("u1"));
    check_both("user.address.city", text("Paris"));
    check_both("user['age']", int(30));
    check_both("user.address['city']", text("Paris"));
    check_both("tags[0]", text("sale"));
    check_both("tags[1.0]", text("new"));
    check_both("tags[1.5]", Fails("out of bounds"));
    check_both("tags[2]", Fails("out of bounds"));
    check_both("tags[-1]", Fails("out of bounds"));
    check_both("tags['x']", Fails("no such overload"));
    check_both("user.missing", Fails("no such key"));
    check_both("user['missing']", Fails("no such key"));
    check_both("user[1]", Fails("no such key"));
    check_both("user.id.x", Fails("no such overload"));
    check_both("channel[0]", Fails("no such overload"));
    check_both("[10, 20][1]", int(20));
}

#[test]
fn event_attributes() {
    check_both("event.type", text("click"));
    check_both("event.id", Is(Value::Null));
    check_both("event.time", int(1000));
    check_both("event.processing_time", int(2000));
    check_both("event.key", text("k1"));
    check_both("event.headers.trace", text("t1"));
    check_both("event.headers", Is(map(vec![("trace", s("t1"))])));
    check_both("event['type']", text("click"));
    check_both("event.time + 1", int(1001));
    check_both("has(event.key)", bool(true));
    check_both("event.id == null", bool(true));
    check_both(
        "event.type == 'click' && event.processing_time - event.time == 1000",
        bool(true),
    );
    check_both("size(event)", int(6));
    let bare = Event::row(5, row_event().payload.as_row().expect("a row").to_vec());
    check("event.key", &row_layout(), &bare, &Is(Value::Null));
    check("event.type", &row_layout(), &bare, &Is(Value::Null));
    check("event.headers", &row_layout(), &bare, &Is(map(vec![])));
}

#[test]
fn presence_and_missing_fields() {
    check_both("has(payload.price)", bool(true));
    check_both("has(user.id)", bool(true));
    check_both("has(user.nope)", bool(false));
    check_both("has(user.address.city)", bool(true));
    check_both("has(price.x)", Fails("no such overload"));
    check_both("has(tags.x)", Fails("no such overload"));
    // a row has every field of its schema, perhaps null
    check_row("has(payload.note)", bool(true));
    check_row("note", Is(Value::Null));
    check_row("note == null", bool(true));
    check_row("payload['note']", Is(Value::Null));
    // an object event lacks it
    check_object("has(payload.note)", bool(false));
    check_object("has(payload.anything)", bool(false));
    check_object("note", Fails("no field `note`"));
    check_object("payload.note", Fails("no field `note`"));
    check_object("payload['note']", Fails("no field `note`"));
    check_object("anything > 1", Fails("no field `anything`"));
    check_object("has(payload.note) && note == ''", bool(false));
    check_object("note == '' && has(payload.note)", bool(false));
    check_object("!has(payload.note) || note == ''", bool(true));
}

#[test]
fn arithmetic() {
    check_both("qty + 1", int(4));
    check_both("qty - 10", int(-7));
    check_both("qty * 2", int(6));
    check_both("qty / 2", int(1));
    check_both("-qty / 2", int(-1));
    check_both("qty % 2", int(1));
    check_both("-qty % 2", int(-1));
    check_both("-qty", int(-3));
    check_both("-price", float(-120.5));
    check_both("price * 2.0", float(241.0));
    check_both("price - 0.5", float(120.0));
    check_both("price / 0.0", float(f64::INFINITY));
    check_both("'a' + 'b'", text("ab"));
    check_both("channel + '!'", text("web!"));
    check_both("[1] + [2]", Is(list(vec![Value::Int(1), Value::Int(2)])));
    check_both("tags + ['x']", Is(list(vec![s("sale"), s("new"), s("x")])));
    check_both("double(qty) * 1.5", float(4.5));
    check_both("int(price) + 1", int(121));
    // no implicit int/double mixing, as in CEL
    check_both("1 + 2.0", Fails("no such overload"));
    check_both("qty * 1.5", Fails("no such overload"));
    check_both("price + 1", Fails("no such overload"));
    check_both("'a' + 1", Fails("no such overload"));
    check_both("true + true", Fails("no such overload"));
    check_both("price % 2.0", Fails("no such overload"));
    check_both("-channel", Fails("no such overload"));
    // checked integer arithmetic
    check_both("big + 1", Fails("overflow"));
    check_both("big * 2", Fails("overflow"));
    check_both("-big - 2", Fails("overflow"));
    check_both("-9223372036854775808 / -1", Fails("overflow"));
    check_both("-9223372036854775808 % -1", Fails("overflow"));
    check_both("-(-9223372036854775807 - 1)", Fails("overflow"));
    check_both("qty / 0", Fails("division by zero"));
    check_both("qty % 0", Fails("modulus by zero"));
    check_both("1 / 0", Fails("division by zero"));
}

#[test]
fn comparisons() {
    check_both("price > 100", bool(true));
    check_both("price > 100.0", bool(true));
    check_both("qty >= 3", bool(true));
    check_both("qty <= 2", bool(false));
    check_both("qty < 3.5", bool(true));
    check_both("3.5 > qty", bool(true));
    check_both("channel < 'xyz'", bool(true));
    check_both("'b' > 'abc'", bool(true));
    check_both("true > false", bool(true));
    check_both("1 == 1.0", bool(true));
    check_both("qty == 3.0", bool(true));
    check_both("1 == '1'", bool(false));
    check_both("1 != '1'", bool(true));
    check_both("null == null", bool(true));
    check_both("null == 0", bool(false));
    check_both("[1, 2] == [1, 2.0]", bool(true));
    check_both("[1, 2] == [1]", bool(false));
    check_both("user == user", bool(true));
    check_both("user.address == {'city': 'Paris'}", bool(true));
    check_both("nan == nan", bool(false));
    check_both("nan != nan", bool(true));
    check_both("nan < 1.0", Fails("compared"));
    check_both("nan < 1", Fails("compared"));
    check_both("null < 1", Fails("no such overload"));
    check_both("'a' < 1", Fails("no such overload"));
    check_both("tags < tags", Fails("no such overload"));
    check_both("9007199254740993 == 9007199254740992.0", bool(true));
}

#[test]
fn logic() {
    check_both("price > 100 && channel == 'web'", bool(true));
    check_both("price > 200 || channel == 'web'", bool(true));
    check_both("!vip", bool(false));
    check_both("!!vip", bool(true));
    check_both("!1", Fails("no such overload"));
    // errors are absorbed when the other side decides
    check_both("false && 1 / 0 == 1", bool(false));
    check_both("1 / 0 == 1 && false", bool(false));
    check_both("1 / 0 == 1 && true", Fails("division by zero"));
    check_both("true && 1 / 0 == 1", Fails("division by zero"));
    check_both("true || 1 / 0 == 1", bool(true));
    check_both("1 / 0 == 1 || true", bool(true));
    check_both("1 / 0 == 1 || false", Fails("division by zero"));
    check_both("false || 1 / 0 == 1", Fails("division by zero"));
    // as do operands of another type
    check_both("1 && false", bool(false));
    check_both("true && 1", Fails("bool"));
    check_both("1 || true", bool(true));
    check_both("'x' || false", Fails("bool"));
    check_both("qty > 1 ? 'many' : 'few'", text("many"));
    check_both("qty > 5 ? 'many' : 'few'", text("few"));
    check_both("vip ? qty : 1 / 0", int(3));
    check_both("1 ? 2 : 3", Fails("bool"));
}

#[test]
fn membership() {
    check_both("channel in ['web', 'app']", bool(true));
    check_both("channel in ['app']", bool(false));
    check_both("qty in [1, 2, 3.0]", bool(true));
    check_both("'sale' in tags", bool(true));
    check_both("'id' in user", bool(true));
    check_both("'nope' in user", bool(false));
    check_both("1 in user", bool(false));
    check_both("null in user", Fails("no such overload"));
    check_both("'a' in 'abc'", Fails("no such overload"));
    check_both("[1] in [[1], [2]]", bool(true));
    check_both("'trace' in event.headers", bool(true));
}

#[test]
fn whole_maps_and_mixed_containers() {
    // the payload holds a NaN, which equals nothing
    check_both("payload == payload", bool(false));
    check_both("payload.user == payload['user']", bool(true));
    check_both("event == event", bool(true));
    check_both("payload.qty == qty", bool(true));
    check_both("size(event.headers)", int(1));
    check_both(
        "tags + event.headers",
        Is(list(vec![s("sale"), s("new"), s("trace")])),
    );
    check_both("tags[nan]", Fails("out of bounds"));
    check_both("qty > 1u", bool(true));
    check_both("[qty, 2u]", Is(list(vec![Value::Int(3), Value::Int(2)])));
    check_object("has(payload.n) ? n : 0", int(0));
    let mut object = BTreeMap::new();
    object.insert("n".to_string(), Value::Null);
    let event = Event::object(0, object);
    check("has(payload.n)", &Layout::Object, &event, &bool(true));
    check("n == null", &Layout::Object, &event, &bool(true));
}

#[test]
fn functions() {
    check_both("size(channel)", int(3));
    check_both("channel.size()", int(3));
    check_both("size('héllo')", int(5));
    check_both("size(tags)", int(2));
    check_both("tags.size()", int(2));
    check_both("size(user)", int(3));
    check_both("size(1)", Fails("no such overload"));
    check_both("size(null)", Fails("no such overload"));
    check_both("channel.contains('e')", bool(true));
    check_both("channel.contains('')", bool(true));
    check_both("channel.startsWith('we')", bool(true));
    check_both("channel.endsWith('web')", bool(true));
    check_both("channel.endsWith('x')", bool(false));
    check_both("channel.contains(1)", Fails("no such overload"));
    check_both("tags.contains('sale')", Fails("no such overload"));
    check_both("int('42')", int(42));
    check_both("int('+42')", int(42));
    check_both("int(' 42')", Fails("int"));
    check_both("int('x')", Fails("int"));
    check_both("int(2.9)", int(2));
    check_both("int(-2.9)", int(-2));
    check_both("int(qty)", int(3));
    check_both("int(1e19)", Fails("overflow"));
    check_both("int(nan)", Fails("overflow"));
    check_both("int(true)", Fails("no such overload"));
    check_both("double(3)", float(3.0));
    check_both("double('2.5')", float(2.5));
    check_both("double('inf')", float(f64::INFINITY));
    check_both("double('x')", Fails("double"));
    check_both("double(price)", float(120.5));
    check_both("string(3)", text("3"));
    check_both("string(-3)", text("-3"));
    check_both("string(2.5)", text("2.5"));
    check_both("string(1.0)", text("1"));
    check_both("string(1e21)", text("1000000000000000000000"));
    check_both("string(true)", text("true"));
    check_both("string(channel)", text("web"));
    check_both("string(null)", Fails("no such overload"));
    check_both("string(tags)", Fails("no such overload"));
}

#[test]
fn fallback_to_the_interpreter() {
    let cases = [
        ("tags.exists(t, t == 'sale')", bool(true)),
        ("tags.all(t, size(t) > 2)", bool(true)),
        (
            "tags.map(t, t + '!')",
            Is(list(vec![s("sale!"), s("new!")])),
        ),
        (
            "tags.filter(t, t.startsWith('s'))",
            Is(list(vec![s("sale")])),
        ),
        ("price > 100 && tags.exists(t, t == channel)", bool(false)),
        ("type(qty) == int", bool(true)),
        ("type(qty) == 'int'", bool(false)),
        ("type(qty)", text("int")),
        ("uint(qty)", int(3)),
        ("1u + 2u", int(3)),
        ("qty + 1u", Fails("no such overload")),
        ("bool('true') && vip", bool(true)),
        ("dyn(qty) + 1", int(4)),
        ("b'ab'", Fails("bytes")),
        ("size(b'ab') + qty", int(5)),
        ("{1: 'one'}", Is(map(vec![("1", s("one"))]))),
        ("[1, 2, 3].exists(x, x / 0 == 1)", Fails("division by zero")),
        ("tags.exists(t, t == nope) || true", bool(true)),
    ];
    for (source, want) in cases {
        if source.contains("nope") {
            check_object(source, want);
            continue;
        }
        let expr = Expr::compile(source, &row_layout()).expect("compiles");
        assert!(
            expr.uses_interpreter(),
            "`{source}` should use the interpreter"
        );
        check_both(source, want);
    }
    for source in [
        "price > 1",
        "tags[0] + channel",
        "has(user.id) ? user.id : ''",
    ] {
        let expr = Expr::compile(source, &row_layout()).expect("compiles");
        assert!(!expr.uses_interpreter(), "`{source}` should be native");
    }
}

fn compile_error(source: &str, layout: &Layout) -> String {
    match Expr::compile(source, layout) {
        Err(ExprError::Compile {
            expression,
            message,
        }) => {
            if source.chars().count() <= 120 {
                assert_eq!(expression, source);
            } else {
                // a long expression is echoed in part, around the error
                assert!(expression.chars().count() <= 122, "{expression}");
                assert!(expression.contains('…'), "{expression}");
            }
            message
        }
        other => panic!("`{source}`: expected a compile error, got {other:?}"),
    }
}

#[test]
fn syntax_errors_give_their_position() {
    let message = compile_error("1 +", &row_layout());
    assert!(
        message.contains("syntax error at line 1, column 4"),
        "{message}"
    );
    let message = compile_error("price > 1 &&& vip", &Layout::Object);
    assert!(message.contains("line 1, column 13"), "{message}");
    let message = compile_error("price >\n  (1 + ", &Layout::Object);
    assert!(message.contains("line 2"), "{message}");
    let message = compile_error("", &Layout::Object);
    assert!(message.contains("syntax error"), "{message}");
    let message = compile_error("'unterminated", &Layout::Object);
    assert!(message.contains("syntax error"), "{message}");
}

#[test]
fn unknown_fields_of_a_row_are_compile_errors() {
    let all = "price, qty, channel, vip, tags, user, ts, big, nan, note";
    for (source, column) in [
        ("nope > 1", 1),
        ("price > 1 && nope", 14),
        ("'é' + nope", 7),
        ("payload.nope", 9),
        ("payload['nope']", 8),
        ("has(payload.nope)", 5),
        ("tags.exists(t, t == nope)", 21),
        ("{'a': nope}", 7),
    ] {
        let message = compile_error(source, &row_layout());
        assert!(
            message.contains("unknown field `nope`"),
            "{source}: {message}"
        );
        assert!(message.contains(all), "{source}: {message}");
        assert!(
            message.contains(&format!("line 1, column {column}")),
            "{source}: {message}"
        );
    }
    // the same names compile on an object layout, and comprehension variables are not fields
    for source in [
        "nope > 1",
        "payload.nope",
        "has(payload.nope)",
        "[1].exists(nope, nope > 0)",
    ] {
        Expr::compile(source, &Layout::Object).expect("compiles");
    }
    Expr::compile("[1].exists(nope, nope > 0)", &row_layout()).expect("compiles");
    let empty = Layout::Row(Arc::new(Schema::new([]).expect("empty schema")));
    let message = compile_error("x", &empty);
    assert!(message.contains("(none)"), "{message}");
}

#[test]
fn other_compile_errors() {
    for (source, part) in [
        ("event.nope", "unknown event attribute `event.nope`"),
        ("event['nope']", "unknown event attribute"),
        ("has(event.nope)", "unknown event attribute"),
        ("lowerAscii(channel)", "unknown function `lowerAscii`"),
        ("channel.lowerAscii()", "unknown function `lowerAscii`"),
        ("channel.matches('w.*')", "unknown function `matches`"),
        (
            "tags.exists(t, t.upperAscii() == 'X')",
            "unknown function `upperAscii`",
        ),
        ("size(channel, 1)", "wrong use of `size`"),
        ("size()", "wrong use of `size`"),
        ("channel.size(1)", "wrong use of `size`"),
        ("int()", "wrong use of `int`"),
        ("channel.int()", "wrong use of `int`"),
        ("contains(channel, 'a')", "wrong use of `contains`"),
        ("channel.contains()", "wrong use of `contains`"),
        ("channel.startsWith('a', 'b')", "wrong use of `startsWith`"),
    ] {
        let message = compile_error(source, &row_layout());
        assert!(message.contains(part), "{source}: {message}");
        assert!(message.contains("line 1, column"), "{source}: {message}");
    }
    let deep = vec!["1"; 101].join(" + ");
    let message = compile_error(&deep, &row_layout());
    assert!(message.contains("nested too deeply"), "{message}");
    // known functions the native compiler leaves to the interpreter compile
    for source in [
        "optional.of(1).hasValue()",
        "type(1)",
        "bytes('a')",
        "uint(1)",
    ] {
        Expr::compile(source, &row_layout()).expect("compiles");
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    for source in [
        format!("{}1{}", "(".repeat(200), ")".repeat(200)),
        format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        format!("{}1", "-".repeat(1000)),
        vec!["a"; 200].join(" ? 1 : "),
        vec!["1"; 5000].join(" + "),
        vec!["1"; 32_000].join("+"),
        format!("x{}", ".a".repeat(5000)),
    ] {
        let _ = Expr::compile(&source, &Layout::Object);
    }
    // the deepest expressions accepted evaluate, natively and in the interpreter, on the
    // default 2 MiB stack of a test thread
    let native = vec!["qty"; 99].join(" + ");
    let expr = Expr::compile(&native, &row_layout()).expect("compiles");
    assert_eq!(expr.eval(&row_event()).ok(), Some(Value::Int(297)));
    let chain = vec!["qty"; 27].join(" + ");
    for source in [
        format!("{chain} + int(1u)"),
        format!("[1].exists(x, {chain} > x)"),
    ] {
        let expr = Expr::compile(&source, &row_layout()).expect("compiles");
        assert!(expr.eval(&row_event()).is_ok(), "{source}");
        assert!(expr.eval_interpreted(&row_event()).is_ok(), "{source}");
    }
    let chain = vec!["qty"; 40].join(" + ");
    for source in [
        format!("{chain} + int(1u)"),
        format!("[1].exists(x, x > 0) && {chain} > 1"),
    ] {
        let message = compile_error(&source, &row_layout());
        assert!(
            message.contains("too deeply for the CEL interpreter"),
            "{message}"
        );
    }
    let long = vec!["1"; 40_000].join("+");
    let message = compile_error(&long, &Layout::Object);
    assert!(message.contains("too long"), "{message}");
    let nested = format!("{}1{}", "(".repeat(30), ")".repeat(30));
    assert_eq!(
        Expr::compile(&nested, &Layout::Object)
            .expect("compiles")
            .eval(&object_event())
            .ok(),
        Some(Value::Int(1))
    );
}

#[test]
fn payload_fields_are_sorted_and_deduplicated() {
    let fields = |source: &str, layout: &Layout| {
        Expr::compile(source, layout)
            .expect("compiles")
            .payload_fields()
    };
    let source = "price > 100 && channel == 'web' && user.id == 'x' && price < 1000";
    for layout in [row_layout(), Layout::Object] {
        assert_eq!(fields(source, &layout), ["channel", "price", "user"]);
        assert_eq!(
            fields("payload['qty'] + payload.qty + qty", &layout),
            ["qty"]
        );
        assert_eq!(
            fields("tags.exists(t, t == channel)", &layout),
            ["channel", "tags"]
        );
        assert_eq!(fields("has(payload.note)", &layout), ["note"]);
        assert_eq!(
            fields("event.time > 0 && event.type == 'x'", &layout),
            Vec::<String>::new()
        );
        assert!(!Expr::compile(source, &layout)
            .expect("compiles")
            .reads_whole_payload());
    }
    let mut all: Vec<String> = self::fields()
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    all.sort();
    for source in [
        "payload",
        "payload[channel]",
        "size(payload) > 1",
        "[1].exists(x, payload.size() > x)",
    ] {
        let expr = Expr::compile(source, &row_layout()).expect("compiles");
        assert!(expr.reads_whole_payload(), "{source}");
        assert_eq!(expr.payload_fields(), all, "{source}");
        assert!(Expr::compile(source, &Layout::Object)
            .expect("compiles")
            .reads_whole_payload());
    }
    assert_eq!(fields("payload[channel]", &Layout::Object), ["channel"]);
}

#[test]
fn output_types() {
    let row = row_layout();
    let ty = |source: &str, layout: &Layout| {
        Expr::compile(source, layout)
            .expect("compiles")
            .output_type()
    };
    for (source, expected) in [
        ("price", Some(FieldType::Float)),
        ("qty", Some(FieldType::Int)),
        ("channel", Some(FieldType::String)),
        ("vip", Some(FieldType::Bool)),
        ("ts", Some(FieldType::Timestamp)),
        ("ts + 1000", Some(FieldType::Int)),
        ("note", Some(FieldType::String)),
        ("user", None),
        ("user.id", None),
        ("qty + 1", Some(FieldType::Int)),
        ("-qty", Some(FieldType::Int)),
        ("price * 2.0", Some(FieldType::Float)),
        ("price % 2.0", None),
        ("1 + 2.0", None),
        ("price > 1", Some(FieldType::Bool)),
        ("price > 1 && vip", Some(FieldType::Bool)),
        ("channel in ['a']", Some(FieldType::Bool)),
        ("has(user.id)", Some(FieldType::Bool)),
        ("'a' + channel", Some(FieldType::String)),
        ("size(channel)", Some(FieldType::Int)),
        ("channel.startsWith('a')", Some(FieldType::Bool)),
        ("double(qty)", Some(FieldType::Float)),
        ("int(price)", Some(FieldType::Int)),
        ("string(qty)", Some(FieldType::String)),
        ("qty > 1 ? 1 : 2", Some(FieldType::Int)),
        ("qty > 1 ? 1 : 'a'", None),
        ("[1, qty]", Some(FieldType::Json)),
        ("event.time", Some(FieldType::Timestamp)),
        ("event.type", Some(FieldType::String)),
        ("event.key", None),
        ("null", None),
        ("42", Some(FieldType::Int)),
        ("'x'", Some(FieldType::String)),
        ("tags.exists(t, t == 'a')", None),
    ] {
        assert_eq!(ty(source, &row), expected, "`{source}`");
    }
    assert_eq!(ty("price", &Layout::Object), None);
    assert_eq!(ty("price > 1", &Layout::Object), Some(FieldType::Bool));
}

#[test]
fn eval_bool_requires_a_bool() {
    let expr = Expr::compile("qty", &row_layout()).expect("compiles");
    match expr.eval_bool(&row_event()) {
        Err(ExprError::Eval { message, .. }) => {
            assert!(message.contains("expected a bool, got int"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let expr = Expr::compile("tags.map(t, 1)", &row_layout()).expect("compiles");
    assert!(expr.eval_bool(&row_event()).is_err());
    let expr = Expr::compile("tags.exists(t, t == 'new')", &row_layout()).expect("compiles");
    assert_eq!(expr.eval_bool(&row_event()).ok(), Some(true));
}

#[test]
fn a_payload_of_the_other_layout_is_an_error() {
    let expr = Expr::compile("price > 1", &row_layout()).expect("compiles");
    assert!(matches!(
        expr.eval(&object_event()),
        Err(ExprError::Eval { .. })
    ));
    let expr = Expr::compile("price > 1", &Layout::Object).expect("compiles");
    assert!(matches!(
        expr.eval_bool(&row_event()),
        Err(ExprError::Eval { .. })
    ));
    // a row shorter than its schema
    let short = Event::row(0, vec![Value::Float(1.0)]);
    let expr = Expr::compile("qty", &row_layout()).expect("compiles");
    assert!(matches!(expr.eval(&short), Err(ExprError::Eval { .. })));
    assert!(expr.eval_interpreted(&short).is_err());
}

#[test]
fn expressions_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Expr>();
    let expr = Expr::compile("qty + 1", &row_layout()).expect("compiles");
    assert_eq!(expr.source(), "qty + 1");
    let copy = expr.clone();
    let handle = std::thread::spawn(move || copy.eval(&row_event()).ok());
    assert_eq!(handle.join().expect("no panic"), Some(Value::Int(4)));
    assert!(format!("{expr:?}").contains("qty + 1"));
}

/// The key test: on random expressions over random events, the native evaluator agrees with
/// the `cel` interpreter, on the value and on whether evaluation fails.
mod differential {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use dataflow_event::{Event, FieldType, Layout, Schema, Value};
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::super::Expr;

    const FIELDS: [(&str, FieldType); 10] = [
        ("i", FieldType::Int),
        ("j", FieldType::Int),
        ("f", FieldType::Float),
        ("g", FieldType::Float),
        ("s", FieldType::String),
        ("t", FieldType::String),
        ("b", FieldType::Bool),
        ("n", FieldType::Int),
        ("l", FieldType::Json),
        ("m", FieldType::Json),
    ];

    fn row_layout() -> Layout {
        Layout::Row(Arc::new(Schema::new(FIELDS).expect("valid schema")))
    }

    fn int() -> BoxedStrategy<i64> {
        prop_oneof![
            4 => -3i64..=3,
            1 => Just(i64::MAX),
            1 => Just(i64::MIN),
            1 => Just(1i64 << 53),
            1 => any::<i64>(),
        ]
        .boxed()
    }

    fn float() -> BoxedStrategy<f64> {
        prop_oneof![
            // whole numbers, to meet ints
            3 => (-3i32..=3).prop_map(f64::from),
            4 => select(vec![0.0, -0.0, 0.5, 1.0, 1.5, 2.0, -2.5, 3.0, 1e300, 9007199254740992.0]),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => any::<f64>(),
        ]
        .boxed()
    }

    const STRINGS: [&str; 10] = ["", "a", "ab", "b", "é", "web", "42", "-1.5", "true", "A"];

    fn text() -> BoxedStrategy<String> {
        select(STRINGS.to_vec()).prop_map(str::to_string).boxed()
    }

    fn scalar() -> BoxedStrategy<Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            int().prop_map(Value::Int),
            float().prop_map(Value::Float),
            text().prop_map(Value::from),
        ]
        .boxed()
    }

    fn any_value() -> BoxedStrategy<Value> {
        scalar()
            .prop_recursive(2, 12, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3)
                        .prop_map(|items| Value::List(Arc::new(items))),
                    prop::collection::btree_map(select(vec!["k", "a", "s"]), inner, 0..3).prop_map(
                        |entries| Value::Map(Arc::new(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect()
                        ))
                    ),
                ]
            })
            .boxed()
    }

    /// A row of the schema: typed values (`n` is sometimes null, the JSON fields anything).
    fn row() -> impl Strategy<Value = Vec<Value>> {
        (
            int(),
            int(),
            float(),
            float(),
            text(),
            text(),
            any::<bool>(),
            prop_oneof![Just(Value::Null), int().prop_map(Value::Int)],
            prop::collection::vec(scalar(), 0..3),
            any_value(),
        )
            .prop_map(|(i, j, f, g, s, t, b, n, l, m)| {
                vec![
                    Value::Int(i),
                    Value::Int(j),
                    Value::Float(f),
                    Value::Float(g),
                    Value::from(s),
                    Value::from(t),
                    Value::Bool(b),
                    n,
                    Value::List(Arc::new(l)),
                    m,
                ]
            })
    }

    /// An object payload: a row's fields by name (perhaps some missing), or some of the
    /// same names holding anything.
    fn object() -> impl Strategy<Value = BTreeMap<String, Value>> {
        let names = || FIELDS.iter().map(|(name, _)| name.to_string());
        prop_oneof![
            (
                row(),
                prop::collection::vec(prop::bool::weighted(0.85), FIELDS.len())
            )
                .prop_map(move |(row, keep)| {
                    names()
                        .zip(row)
                        .zip(keep)
                        .filter(|(_, keep)| *keep)
                        .map(|(field, _)| field)
                        .collect()
                }),
            prop::collection::btree_map(select(names().collect::<Vec<_>>()), any_value(), 0..10),
        ]
    }

    fn metadata() -> impl Strategy<Value = (Option<String>, Option<String>, i64, Option<Value>)> {
        (
            prop::option::of(text()),
            prop::option::of(text()),
            int(),
            prop::option::of(scalar()),
        )
    }

    fn literal() -> BoxedStrategy<String> {
        prop_oneof![
            int().prop_map(|i| format!("({i})")),
            float()
                .prop_filter("a finite literal", |f| f.is_finite())
                .prop_map(|f| format!("({f:?})")),
            text().prop_map(|s| format!("'{s}'")),
            any::<bool>().prop_map(|b| b.to_string()),
            Just("null".to_string()),
        ]
        .boxed()
    }

    fn reference() -> BoxedStrategy<String> {
        select(vec![
            "i",
            "j",
            "f",
            "g",
            "s",
            "t",
            "b",
            "n",
            "l",
            "m",
            "payload.i",
            "payload['s']",
            "payload.f",
            "l[0]",
            "m.k",
            "m['a']",
            "event.time",
            "event.type",
            "event.id",
            "event.key",
        ])
        .prop_map(str::to_string)
        .boxed()
    }

    const BINARY: [&str; 13] = [
        "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
    ];

    fn untyped() -> impl Strategy<Value = String> {
        prop_oneof![literal(), reference()].prop_recursive(4, 40, 3, |inner| {
            prop_oneof![
                6 => (inner.clone(), select(BINARY.to_vec()), inner.clone())
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                1 => (select(vec!["!", "-"]), inner.clone()).prop_map(|(op, a)| format!("{op}({a})")),
                2 => (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
                1 => (select(vec!["size", "int", "double", "string"]), inner.clone())
                    .prop_map(|(f, a)| format!("{f}({a})")),
                1 => inner.clone().prop_map(|a| format!("({a}).size()")),
                1 => (inner.clone(), select(vec!["contains", "startsWith", "endsWith"]), inner.clone())
                    .prop_map(|(a, f, b)| format!("({a}).{f}({b})")),
                1 => (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(a, b, c)| format!("({a} in [{b}, {c}])")),
                1 => inner.clone().prop_map(|a| format!("({a} in m)")),
                1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
                1 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a})[{b}]")),
                1 => select(vec!["has(payload.i)", "has(payload.n)", "has(m.k)", "has(l.k)"])
                    .prop_map(str::to_string),
            ]
        })
    }

    fn lit_int() -> BoxedStrategy<String> {
        prop_oneof![
            3 => (-3i64..=3).prop_map(|i| format!("({i})")),
            1 => int().prop_map(|i| format!("({i})")),
        ]
        .boxed()
    }

    fn lit_float() -> BoxedStrategy<String> {
        float()
            .prop_filter("a finite literal", |f| f.is_finite())
            .prop_map(|f| format!("({f:?})"))
            .boxed()
    }

    fn pick(names: &[&'static str]) -> BoxedStrategy<String> {
        select(names.to_vec()).prop_map(str::to_string).boxed()
    }

    /// Expressions of one type each, so that most evaluations succeed and compute.
    #[derive(Clone)]
    struct Typed {
        int: BoxedStrategy<String>,
        float: BoxedStrategy<String>,
        string: BoxedStrategy<String>,
        boolean: BoxedStrategy<String>,
    }

    fn typed(depth: u32) -> Typed {
        let leaves = Typed {
            int: prop_oneof![lit_int(), pick(&["i", "j", "payload.i", "event.time", "n"])].boxed(),
            float: prop_oneof![lit_float(), pick(&["f", "g", "payload.f"])].boxed(),
            string: prop_oneof![
                text().prop_map(|s| format!("'{s}'")),
                pick(&["s", "t", "payload['s']", "event.type"])
            ]
            .boxed(),
            boolean: prop_oneof![
                any::<bool>().prop_map(|b| b.to_string()),
                pick(&["b", "has(payload.i)", "has(m.k)"])
            ]
            .boxed(),
        };
        if depth == 0 {
            return leaves;
        }
        let sub = typed(depth - 1);
        let cond = |c: BoxedStrategy<String>, a: BoxedStrategy<String>| {
            (c, a.clone(), a).prop_map(|(c, a, b)| format!("({c} ? {a} : {b})"))
        };
        let int = prop_oneof![
            4 => leaves.int,
            4 => (sub.int.clone(), pick(&["+", "-", "*", "/", "%"]), sub.int.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            1 => sub.int.clone().prop_map(|a| format!("-({a})")),
            1 => cond(sub.boolean.clone(), sub.int.clone()),
            1 => sub.string.clone().prop_map(|a| format!("size({a})")),
            1 => sub.float.clone().prop_map(|a| format!("int({a})")),
            1 => sub.string.clone().prop_map(|a| format!("int({a})")),
            1 => (sub.int.clone(), sub.int.clone(), pick(&["0", "1", "2", "-1", "1.0", "0.5", "'a'"]))
                .prop_map(|(a, b, k)| format!("([{a}, {b}][{k}])")),
        ]
        .boxed();
        let float = prop_oneof![
            4 => leaves.float,
            4 => (sub.float.clone(), pick(&["+", "-", "*", "/"]), sub.float.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            1 => sub.float.clone().prop_map(|a| format!("-({a})")),
            1 => cond(sub.boolean.clone(), sub.float.clone()),
            1 => sub.int.clone().prop_map(|a| format!("double({a})")),
            1 => sub.string.clone().prop_map(|a| format!("double({a})")),
        ]
        .boxed();
        let string = prop_oneof![
            4 => leaves.string,
            2 => (sub.string.clone(), sub.string.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            1 => cond(sub.boolean.clone(), sub.string.clone()),
            1 => sub.int.clone().prop_map(|a| format!("string({a})")),
            1 => sub.float.clone().prop_map(|a| format!("string({a})")),
            1 => sub.boolean.clone().prop_map(|a| format!("string({a})")),
        ]
        .boxed();
        let number = prop_oneof![sub.int.clone(), sub.float.clone()];
        let boolean = prop_oneof![
            3 => leaves.boolean,
            3 => (number.clone(), pick(&["==", "!=", "<", "<=", ">", ">="]), number.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            2 => (sub.string.clone(), pick(&["==", "!=", "<", "<=", ">", ">="]), sub.string.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            3 => (sub.boolean.clone(), pick(&["&&", "||", "==", "!="]), sub.boolean.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            1 => sub.boolean.clone().prop_map(|a| format!("!({a})")),
            1 => (sub.string.clone(), pick(&["contains", "startsWith", "endsWith"]), sub.string.clone())
                .prop_map(|(a, f, b)| format!("({a}).{f}({b})")),
            1 => (number.clone(), number.clone(), number)
                .prop_map(|(a, b, c)| format!("({a} in [{b}, {c}])")),
            1 => (sub.string.clone(), sub.string.clone())
                .prop_map(|(a, b)| format!("({a} in [{b}, 'a'])")),
            1 => sub.string.clone().prop_map(|a| format!("({a} in m)")),
            1 => cond(sub.boolean.clone(), sub.boolean),
        ]
        .boxed();
        Typed {
            int,
            float,
            string,
            boolean,
        }
    }

    /// Expressions mostly well typed, and some of anything.
    pub(super) fn expression() -> impl Strategy<Value = String> {
        let typed = typed(3);
        prop_oneof![
            2 => untyped().boxed(),
            1 => typed.int,
            1 => typed.float,
            1 => typed.string,
            3 => typed.boolean,
        ]
    }

    fn with_metadata(
        mut event: Event,
        (kind, id, time, key): (Option<String>, Option<String>, i64, Option<Value>),
    ) -> Event {
        event.kind = kind.map(Arc::from);
        event.id = id.map(Arc::from);
        event.event_time = time;
        event.key = key;
        event
    }

    fn agree(source: &str, layout: &Layout, event: &Event) -> Result<(), TestCaseError> {
        let expr = Expr::compile(source, layout)
            .map_err(|error| TestCaseError::fail(format!("`{source}`: {error}")))?;
        prop_assert!(!expr.uses_interpreter(), "`{}` is not native", source);
        let native = expr.eval(event);
        let interpreted = expr.eval_interpreted(event);
        match (&native, &interpreted) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "`{}` on {:?}", source, event),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(
                false,
                "`{}` on {:?}: native {:?}, interpreter {:?}",
                source,
                event,
                native,
                interpreted
            ),
        }
        let as_bool = expr.eval_bool(event).ok();
        let expected = match interpreted {
            Ok(Value::Bool(b)) => Some(b),
            _ => None,
        };
        prop_assert_eq!(as_bool, expected, "`{}` as a bool", source);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn native_agrees_with_the_interpreter(
            source in expression(),
            row in row(),
            object in object(),
            metadata in metadata(),
        ) {
            let row_event = with_metadata(Event::row(0, row), metadata.clone());
            agree(&source, &row_layout(), &row_event)?;
            let object_event = with_metadata(Event::object(0, object), metadata);
            agree(&source, &Layout::Object, &object_event)?;
        }
    }
}

#[test]
fn map_literals_with_string_keys_are_native() {
    let cases = [
        ("{'q': qty}", Is(map(vec![("q", Value::Int(3))]))),
        ("{'q': qty}.q + 1", int(4)),
        (
            "{'b': [qty, channel], 'a': price > 1}",
            Is(map(vec![
                ("a", Value::Bool(true)),
                ("b", list(vec![Value::Int(3), s("web")])),
            ])),
        ),
        ("{}", Is(map(vec![]))),
        ("{'q': qty / 0}", Fails("division by zero")),
    ];
    for (source, want) in cases {
        let expr = Expr::compile(source, &row_layout()).expect("compiles");
        assert!(!expr.uses_interpreter(), "`{source}` should be native");
        check_both(source, want);
    }
    // Other keys, and a key written twice, are left to the interpreter.
    for source in ["{1: 'one'}", "{'q': 1, 'q': 2}", "{channel: 1}"] {
        let expr = Expr::compile(source, &row_layout()).expect("compiles");
        assert!(
            expr.uses_interpreter(),
            "`{source}` should use the interpreter"
        );
    }
}

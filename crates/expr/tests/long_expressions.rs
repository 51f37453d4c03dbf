//! Errors on very long or very deep expressions echo a bounded part of them, still saying
//! where the error is; short expressions keep their error messages word for word.

use dataflow_event::{Event, Layout, Value};
use dataflow_expr::{Expr, ExprError};

/// The most an error message on any expression below may take.
const MAX_MESSAGE: usize = 1024;

fn compile_error(source: &str) -> String {
    match Expr::compile(source, &Layout::Object) {
        Err(error @ ExprError::Compile { .. }) => error.to_string(),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

fn deep(n: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "parentheses",
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        ("open parentheses", format!("{}1", "(".repeat(n))),
        ("lists", format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        ("calls", format!("{}1{}", "size(".repeat(n), ")".repeat(n))),
        ("maps", format!("{}1{}", "{1:".repeat(n), "}".repeat(n))),
    ]
}

#[test]
fn a_10000_deep_expression_is_refused_in_under_1_kb_naming_where() {
    for (name, source) in deep(10_000) {
        let message = compile_error(&source);
        assert!(
            message.len() < MAX_MESSAGE,
            "{name}: {} bytes: {message}",
            message.len()
        );
        assert!(
            message.contains("nested too deeply (more than 100 levels) at line 1, column "),
            "{name}: {message}"
        );
        assert!(
            message.contains(&format!(
                "(the expression has {} bytes; shown in part)",
                source.len()
            )),
            "{name}: {message}"
        );
    }
    // the first bracket too many is named
    let message = compile_error(&format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000)));
    assert!(message.contains("at line 1, column 101 "), "{message}");
}

#[test]
fn the_deepest_expressions_that_fit_in_the_length_limit_are_refused_without_overflowing() {
    // up to 64 KiB of nesting: the refusal comes before the parser recurses
    for (name, source) in [
        (
            "parentheses",
            format!("{}1{}", "(".repeat(32_000), ")".repeat(32_000)),
        ),
        ("open lists", format!("{}1", "[".repeat(65_000))),
        (
            "calls",
            format!("{}1{}", "size(".repeat(10_900), ")".repeat(10_900)),
        ),
        (
            "maps",
            format!("{}1{}", "{1:".repeat(16_000), "}".repeat(16_000)),
        ),
    ] {
        assert!(source.len() <= 64 << 10, "{name}");
        let message = compile_error(&source);
        assert!(message.len() < MAX_MESSAGE, "{name}: {message}");
        assert!(message.contains("nested too deeply"), "{name}: {message}");
    }
}

#[test]
fn long_chains_refused_for_depth_name_where_in_under_1_kb() {
    for source in [
        vec!["1"; 10_000].join("+"),
        format!("x{}", ".a".repeat(10_000)),
    ] {
        let message = compile_error(&source);
        assert!(
            message.len() < MAX_MESSAGE,
            "{} bytes: {message}",
            message.len()
        );
        assert!(
            message.contains("nested too deeply (more than 100 levels) at line 1, column "),
            "{message}"
        );
    }
}

#[test]
fn many_syntax_errors_in_a_long_expression_make_a_short_message() {
    let source = vec!["a +* 1"; 2_000].join(" && ");
    let message = compile_error(&source);
    assert!(
        message.len() < MAX_MESSAGE,
        "{} bytes: {message}",
        message.len()
    );
    assert!(
        message.contains("syntax error at line 1, column 4"),
        "{message}"
    );
    assert!(message.contains("more syntax errors"), "{message}");
    // the echo is around the first error: the start of the expression
    assert!(
        message.starts_with("expression `a +* 1 && a +* 1"),
        "{message}"
    );
}

#[test]
fn the_echo_is_around_the_error_position() {
    let source = format!("{} && event.nope == 1", vec!["true"; 100].join(" && "));
    let message = compile_error(&source);
    assert!(message.len() < MAX_MESSAGE, "{message}");
    assert!(message.starts_with("expression `…"), "{message}");
    assert!(message.contains("event.nope == 1`"), "{message}");
    assert!(
        message.contains("unknown event attribute `event.nope`"),
        "{message}"
    );
    assert!(message.contains("(at line 1, column 807)"), "{message}");
}

#[test]
fn an_evaluation_error_of_a_long_expression_echoes_a_part_of_it() {
    let source = format!("payload.nope == '{}'", "a".repeat(5_000));
    let expr = Expr::compile(&source, &Layout::Object).expect("compiles");
    let payload: std::collections::BTreeMap<String, Value> =
        [("x".to_string(), Value::Int(1))].into_iter().collect();
    let event = Event::object(0, payload);
    let message = expr.eval(&event).expect_err("no such field").to_string();
    assert!(
        message.len() < MAX_MESSAGE,
        "{} bytes: {message}",
        message.len()
    );
    assert!(
        message.starts_with("expression `payload.nope == 'aaa"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "(the expression has {} bytes; shown in part)",
            source.len()
        )),
        "{message}"
    );
}

#[test]
fn short_expressions_keep_their_error_messages() {
    let expected = [
        (
            "1 +",
            "expression `1 +`: syntax error at line 1, column 4: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        ),
        (
            "(1 + 2",
            "expression `(1 + 2`: syntax error at line 1, column 7: missing ')' at '<EOF>'",
        ),
        (
            "payload.a +* 2",
            "expression `payload.a +* 2`: syntax error at line 1, column 12: extraneous input '*' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        ),
        (
            "event.nope",
            "expression `event.nope`: unknown event attribute `event.nope`: expected one of event.type, event.id, event.time, event.processing_time, event.key, event.headers (at line 1, column 7)",
        ),
        (
            "lowerAscii(payload.a)",
            "expression `lowerAscii(payload.a)`: unknown function `lowerAscii` (at line 1, column 11)",
        ),
        (
            "size()",
            "expression `size()`: wrong use of `size`: write `size(x)` or `x.size()` (at line 1, column 5)",
        ),
        (
            "'abc",
            "expression `'abc`: syntax error at line 1, column 1: token recognition error at: ''abc'; syntax error at line 1, column 5: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        ),
    ];
    for (source, message) in expected {
        assert_eq!(compile_error(source), message);
    }
    // brackets inside strings are not nesting
    let brackets = format!("'{}' == payload.a", "(".repeat(500));
    assert!(Expr::compile(&brackets, &Layout::Object).is_ok());
    let raw = format!("r'\\' + '{}' == payload.a", "[".repeat(500));
    assert!(Expr::compile(&raw, &Layout::Object).is_ok(), "{raw}");
    let triple = format!("'''{}''' == payload.a", "{".repeat(500));
    assert!(Expr::compile(&triple, &Layout::Object).is_ok());
}

//! The exposition parses as OpenMetrics text, names exactly the metrics of `docs/metrics.md`,
//! and counts exactly under concurrent updates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dataflow_metrics::{Metrics, RefuseReason};

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// One metric family: its `# TYPE` (and optional `# UNIT`) and the samples after it.
#[derive(Debug)]
struct MetricFamily {
    name: String,
    kind: String,
    samples: Vec<Sample>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok_first = first.is_ascii_alphabetic() || first == '_' || (colon && first == ':');
    ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            s.parse().map_err(|e| format!("bad value {s:?}: {e}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and the rest after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        if !labels.is_empty() {
            s = s
                .strip_prefix(',')
                .ok_or_else(|| format!("expected ',' or '}}' at {s:?}"))?;
        }
        let eq = s
            .find('=')
            .ok_or_else(|| format!("label without '=' at {s:?}"))?;
        let name = &s[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label value of {name:?} not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of {name:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {name:?}")),
                },
                Some((_, '\n')) => return Err(format!("raw newline in {name:?}")),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        s = &s[end + 1..];
    }
}

/// A line-based check of the OpenMetrics text format, as far as dataflow uses it: every family
/// has `# HELP` and `# TYPE` before its samples, a `# UNIT` names the family's suffix, every
/// sample line is `name{labels} value` with the suffixes its type allows, histogram buckets are
/// cumulative and end in `+Inf` = `_count`, and the text ends with `# EOF`.
fn parse(text: &str) -> Result<Vec<MetricFamily>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with \"# EOF\\n\"")?;
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut helped: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| err("comment without a name".into()))?;
            match keyword {
                Some("HELP") => {
                    if families.iter().any(|f| f.name == name) {
                        return Err(err(format!("family {name} declared twice")));
                    }
                    if !is_name(name, true) {
                        return Err(err("bad metric name".into()));
                    }
                    helped = Some(name.to_owned());
                }
                Some("TYPE") => {
                    if helped.as_deref() != Some(name) {
                        return Err(err("# TYPE without its # HELP".into()));
                    }
                    let kind = arg.ok_or_else(|| err("# TYPE without a type".into()))?;
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !known.contains(&kind) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    families.push(MetricFamily {
                        name: name.to_owned(),
                        kind: kind.to_owned(),
                        samples: Vec::new(),
                    });
                }
                Some("UNIT") => {
                    let family = families.last().filter(|f| f.name == name);
                    let family = family.ok_or_else(|| err("# UNIT without its # TYPE".into()))?;
                    let unit = arg.ok_or_else(|| err("# UNIT without a unit".into()))?;
                    if !family.name.ends_with(&format!("_{unit}")) || !family.samples.is_empty() {
                        return Err(err("unit is not the family's suffix".into()));
                    }
                }
                _ => return Err(err("unknown comment".into())),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(err("comment after # EOF or malformed".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("sample without a value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after).map_err(err)?,
            None => (Vec::new(), &line[name_end..]),
        };
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        // No timestamps or exemplars in dataflow's exposition.
        let value = parse_value(value).map_err(err)?;
        let family = families
            .last_mut()
            .ok_or_else(|| err("sample before any # TYPE".into()))?;
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        let suffix = name
            .strip_prefix(family.name.as_str())
            .filter(|s| suffixes.contains(s))
            .ok_or_else(|| err(format!("sample not of family {}", family.name)))?;
        if suffix == "_bucket" && !labels.iter().any(|(k, _)| k == "le") {
            return Err(err("bucket without le".into()));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for family in families.iter().filter(|f| f.kind == "histogram") {
        check_histogram(family)?;
    }
    Ok(families)
}

/// Buckets are cumulative per label set, in increasing `le`, and the `+Inf` bucket equals
/// `_count` (prometheus-client writes `_sum` and `_count` before the buckets).
fn check_histogram(family: &MetricFamily) -> Result<(), String> {
    let series = |s: &Sample| -> Labels {
        s.labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect()
    };
    let mut buckets: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<Labels, f64> = BTreeMap::new();
    for sample in &family.samples {
        if sample.name.ends_with("_bucket") {
            let le = sample
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v);
            let le = parse_value(le.map_or("", |v| v.as_str()))?;
            buckets
                .entry(series(sample))
                .or_default()
                .push((le, sample.value));
        } else if sample.name.ends_with("_count") {
            counts.insert(series(sample), sample.value);
        }
    }
    if buckets.len() != counts.len() {
        return Err(format!(
            "{}: buckets and _count of different series",
            family.name
        ));
    }
    for (key, buckets) in &buckets {
        if buckets
            .windows(2)
            .any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1)
        {
            return Err(format!("{}: buckets not cumulative", family.name));
        }
        match buckets.last() {
            Some(&(le, count)) if le == f64::INFINITY && Some(&count) == counts.get(key) => {}
            _ => return Err(format!("{}: +Inf bucket is not _count", family.name)),
        }
    }
    Ok(())
}

/// `(name, type)` of every metric in the tables of `docs/metrics.md`.
fn contract() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("docs/metrics.md is readable");
    doc.lines()
        .filter(|line| line.starts_with("| `dataflow_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

fn sample<'a>(families: &'a [MetricFamily], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// Metrics with one handle of each kind, each touched once.
fn populated() -> Metrics {
    let metrics = Metrics::new();
    let op = metrics.operator("orders", "we\"ird\\op\nname", "window");
    op.events_received(10);
    op.events_sent(4);
    op.errors(1);
    op.late_events(2);
    op.dead_letters(1);
    op.observe_processing(Duration::from_micros(300));
    op.observe_processing(Duration::from_millis(30));
    op.backpressured(Duration::from_millis(5));
    op.set_queue_fill(2, 8);
    op.set_watermark(1_700_000_000_000, 1_700_000_003_000);
    let src = metrics.source("orders", "file-in");
    src.read(10, 1_000);
    src.rate_limit_wait(Duration::from_millis(20));
    src.set_lag_bytes(4_096);
    src.set_partition_lag("bids/0", 7);
    let cp = metrics.checkpoints("orders");
    cp.completed(Duration::from_millis(120), 65_536);
    cp.failed();
    cp.restored(3, SystemTime::now(), Duration::from_millis(80));
    let ingest = metrics.ingest("orders");
    ingest.accepted(5);
    ingest.refused(RefuseReason::Overloaded);
    metrics
}

#[test]
fn exposition_parses_as_openmetrics_text() {
    let text = populated().encode();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(families.iter().all(|f| !f.samples.is_empty()));
    let op = [
        ("pipeline", "orders"),
        ("operator", "we\"ird\\op\nname"),
        ("kind", "window"),
    ];
    let value = |name: &str, labels: &[(&str, &str)]| sample(&families, name, labels).value;
    assert_eq!(value("dataflow_operator_events_received_total", &op), 10.0);
    assert_eq!(
        value("dataflow_operator_processing_seconds_count", &op),
        2.0
    );
    assert_eq!(value("dataflow_operator_queue_fill", &op), 0.25);
    assert_eq!(value("dataflow_operator_watermark_lag_seconds", &op), 3.0);
    let src = [("pipeline", "orders"), ("source", "file-in")];
    assert_eq!(value("dataflow_source_bytes_read_total", &src), 1_000.0);
    assert_eq!(value("dataflow_source_lag_bytes", &src), 4_096.0);
    let refused = [("pipeline", "orders"), ("reason", "overloaded")];
    assert_eq!(value("dataflow_ingest_refused_total", &refused), 1.0);
}

#[test]
fn the_checker_rejects_malformed_text() {
    let good = "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n# EOF\n";
    assert!(parse(good).is_ok());
    for bad in [
        "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n",
        "# HELP a_b A.\n# TYPE a_b counter\na_b{x=\"1\"} 2\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=1} 2\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\",x=\"2\"} 2\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\"}2\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\na_b_total{x=\"1\"} two\n# EOF\n",
        "a_b_total 2\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\n# UNIT a_b seconds\n# EOF\n",
        "# HELP a_b A.\n# TYPE a_b counter\n# EOF\n# HELP c C.\n# EOF\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n# EOF\n",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn exposition_has_exactly_the_documented_metrics() {
    let contract = contract();
    assert_eq!(
        contract.len(),
        34,
        "tables of docs/metrics.md: {contract:?}"
    );
    let text = populated().encode();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut documented = BTreeSet::new();
    for (name, kind) in &contract {
        assert!(name.starts_with("dataflow_"), "{name}");
        let family_name = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("counter {name} does not end in _total")),
            "gauge" | "histogram" => name.as_str(),
            other => panic!("{name}: unexpected type {other} in docs/metrics.md"),
        };
        let family = families
            .iter()
            .find(|f| f.name == family_name)
            .unwrap_or_else(|| panic!("{name} of docs/metrics.md is not in the exposition"));
        assert_eq!(&family.kind, kind, "type of {name}");
        let expected_sample = match kind.as_str() {
            "histogram" => format!("{name}_count"),
            _ => name.clone(),
        };
        assert!(
            family.samples.iter().any(|s| s.name == expected_sample),
            "no sample {expected_sample}"
        );
        documented.insert(family_name.to_owned());
    }
    for family in &families {
        assert!(
            documented.contains(&family.name),
            "{} is exposed but not in docs/metrics.md",
            family.name
        );
    }
}

#[test]
fn counters_from_two_threads_add_up() {
    const PER_THREAD: u64 = 20_000;
    let metrics = Arc::new(Metrics::new());
    let shared = metrics.operator("p", "op", "map");
    let source = metrics.source("p", "in");
    let ingest = metrics.ingest("p");
    std::thread::scope(|scope| {
        for t in 0..2 {
            // One thread uses clones of the handles, the other asks the registry again.
            let op = if t == 0 {
                shared.clone()
            } else {
                metrics.operator("p", "op", "map")
            };
            let source = source.clone();
            let ingest = ingest.clone();
            scope.spawn(move || {
                for _ in 0..PER_THREAD {
                    op.events_received(3);
                    op.events_sent(1);
                    op.observe_processing(Duration::from_micros(1));
                    source.read(1, 100);
                    ingest.refused(RefuseReason::Malformed);
                }
            });
        }
    });
    let text = metrics.encode();
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let op = [("pipeline", "p"), ("operator", "op"), ("kind", "map")];
    let src = [("pipeline", "p"), ("source", "in")];
    let value = |name: &str, labels: &[(&str, &str)]| sample(&families, name, labels).value;
    let n = 2 * PER_THREAD;
    assert_eq!(
        value("dataflow_operator_events_received_total", &op),
        (3 * n) as f64
    );
    assert_eq!(value("dataflow_operator_events_sent_total", &op), n as f64);
    assert_eq!(
        value("dataflow_operator_processing_seconds_count", &op),
        n as f64
    );
    assert_eq!(value("dataflow_source_events_read_total", &src), n as f64);
    assert_eq!(
        value("dataflow_source_bytes_read_total", &src),
        (100 * n) as f64
    );
    let refused = [("pipeline", "p"), ("reason", "malformed")];
    assert_eq!(value("dataflow_ingest_refused_total", &refused), n as f64);
    assert_eq!(shared.events_received_count(), 3 * n);
}

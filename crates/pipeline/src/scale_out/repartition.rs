//! The split of a scale-out pipeline at a `key_by` that needs its events re-partitioned
//! (the Kafka Streams model; the records, markers and dedup are
//! `dataflow_connectors::kafka_repartition`'s).
//!
//! A `key_by` repartitions when its expression is neither the record key (`event.key`) nor the source's `partitioned_by` (what the producer partitioned by, compared
//! as written, spaces aside). Then the job has two kinds of task:
//!
//! - an **upstream** task per input partition: the source, the steps up to and including that
//!   `key_by` (only filters may come before it: the repartition topic carries events of the
//!   source's layout), and the repartition sink;
//! - a **downstream** task per partition of the repartition topic: a source reading it, the
//!   `key_by` again (it gives each event the key it already has) and the rest of the steps,
//!   with the config's sinks.
//!
//! One `key_by` per pipeline may repartition; `check` refuses a second.

use dataflow_connectors::kafka::{KafkaSourceSettings, TaskPartition, Topics};
use dataflow_connectors::kafka_repartition::{RepartitionSinkSettings, TaskRole};
use dataflow_connectors::{SinkKind, SinkSpec, SourceKind};

use crate::spec::{PipelineSpec, Problem, StepSpec};

/// Where a scale-out pipeline splits, and its repartition topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// The index of the repartitioning `key_by` in `steps`.
    pub at: usize,
    /// The input topic.
    pub input: String,
    /// The repartition topic, `<group>-step<at>-repartition`.
    pub topic: String,
}

/// The partition counts found (or made) when the processor starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// The input topic's partitions: the upstream tasks.
    pub upstream: usize,
    /// The repartition topic's partitions: the downstream tasks.
    pub partitions: usize,
}

fn squeezed(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Whether a `key_by` on `expr` needs a repartition topic, the source declaring
/// `partitioned_by`.
pub fn repartitions(expr: &str, partitioned_by: Option<&str>) -> bool {
    let expr = squeezed(expr);
    if expr == "event.key" {
        return false;
    }
    partitioned_by.is_none_or(|declared| squeezed(declared) != expr)
}

fn scale_out_settings(spec: &PipelineSpec) -> Option<(&str, &KafkaSourceSettings)> {
    spec.sources.iter().find_map(|source| match &source.kind {
        SourceKind::Kafka(settings) if settings.scale_out => {
            Some((source.name.as_str(), &**settings))
        }
        _ => None,
    })
}

/// The indexes of the steps that are repartitioning `key_by`s of a scale-out `spec`.
fn repartitioning(spec: &PipelineSpec) -> Vec<usize> {
    let Some((_, settings)) = scale_out_settings(spec) else {
        return Vec::new();
    };
    spec.steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| match step {
            StepSpec::KeyBy(expr)
                if repartitions(&expr.source, settings.partitioned_by.as_deref()) =>
            {
                Some(index)
            }
            _ => None,
        })
        .collect()
}

/// Where `spec` (a scale-out one) splits, if one of its `key_by`s repartitions.
pub fn split(spec: &PipelineSpec) -> Option<Split> {
    let (name, settings) = scale_out_settings(spec)?;
    let at = *repartitioning(spec).first()?;
    let input = match &settings.topics {
        Topics::Names(names) => names.first()?.clone(),
        Topics::Pattern(_) => return None,
    };
    let group = dataflow_connectors::kafka::group_id(name, settings);
    Some(Split {
        at,
        input,
        topic: dataflow_connectors::kafka_repartition::topic_name(&group, at),
    })
}

/// What a scale-out config with a repartitioning `key_by` must also be.
pub fn problems(spec: &PipelineSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let steps = repartitioning(spec);
    let Some(&at) = steps.first() else {
        return problems;
    };
    for &second in &steps[1..] {
        problems.push(Problem {
            place: spec.steps[second].place().clone(),
            message: format!(
                "a scale-out pipeline may repartition once: this `key_by` needs a second \
                 repartition topic after the one of steps[{at}] (key by `event.key`, or by the \
                 source's `partitioned_by`, to keep the partitioning)"
            ),
        });
    }
    for step in &spec.steps[..at] {
        if !matches!(step, StepSpec::Filter(_)) {
            problems.push(Problem {
                place: step.place().clone(),
                message: format!(
                    "only filters may come before the `key_by` of steps[{at}], which \
                     repartitions (the repartition topic carries events as the source reads \
                     them); compute the key in the `key_by` itself"
                ),
            });
        }
    }
    if let Some((_, settings)) = scale_out_settings(spec) {
        let one_topic = matches!(&settings.topics, Topics::Names(names) if names.len() == 1);
        if !one_topic {
            let place = spec
                .sources
                .iter()
                .find(|s| matches!(&s.kind, SourceKind::Kafka(k) if k.scale_out))
                .map(|s| s.place.clone())
                .unwrap_or_default();
            problems.push(Problem {
                place,
                message: format!(
                    "the `key_by` of steps[{at}] repartitions, which needs the source to read \
                     one topic (`topics: [name]`), not several or a pattern (or declare \
                     `partitioned_by: <expression>` if the producer partitioned by the key)"
                ),
            });
        }
    }
    problems
}

/// The spec of the upstream task of `task` (an input partition), from the task's spec.
pub fn upstream_spec(
    mut spec: PipelineSpec,
    split: &Split,
    counts: Counts,
    task: &TaskPartition,
) -> PipelineSpec {
    spec.steps.truncate(split.at + 1);
    let (brokers, properties, idle) = spec
        .sources
        .first()
        .and_then(|source| match &source.kind {
            SourceKind::Kafka(settings) => Some((
                settings.brokers.clone(),
                settings.properties.clone(),
                source.watermark.idle_timeout,
            )),
            _ => None,
        })
        .unwrap_or_default();
    let mut sink = SinkSpec::stdout();
    sink.kind = SinkKind::Repartition(Box::new(RepartitionSinkSettings {
        brokers,
        properties,
        topic: split.topic.clone(),
        partitions: counts.partitions,
        upstream: task.partition,
        idle_after: idle.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)),
    }));
    spec.sinks = vec![sink];
    spec
}

/// The spec of the downstream task of `task` (a repartition partition), from the task's spec.
pub fn downstream_spec(mut spec: PipelineSpec, split: &Split) -> PipelineSpec {
    // The `key_by` stays: it gives each event the key it has (and the plan its keyed steps).
    spec.steps.drain(..split.at);
    for source in &mut spec.sources {
        // The rate limit is the input's.
        source.rate_limit = None;
    }
    spec
}

/// The role of the task of `topic`.
pub fn role(split: Option<&Split>, counts: Option<Counts>, topic: &str) -> TaskRole {
    match (split, counts) {
        (Some(split), Some(counts)) if topic == split.topic => TaskRole::Repartition {
            upstream: counts.upstream,
        },
        (Some(_), _) => TaskRole::Input { stamp: true },
        (None, _) => TaskRole::Input { stamp: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_by_repartitions_unless_on_the_record_key_or_the_declared_partitioning() {
        // `key` is a payload field (a window's results have one).
        assert!(repartitions("key", None));
        assert!(!repartitions(" event.key ", None));
        assert!(repartitions("bidder", None));
        assert!(!repartitions("auction", Some("auction")));
        assert!(!repartitions("a % 4", Some("a%4")));
        assert!(repartitions("bidder", Some("auction")));
    }
}

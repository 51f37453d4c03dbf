//! The checkpoint writer task: saves the checkpoints the chain takes once every sink has
//! acknowledged their barrier, then tells the sinks to commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dataflow_checkpoint::{CheckpointError, LocalStorage};
use dataflow_metrics::{CheckpointMetrics, Counters};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::messages::{PendingCheckpoint, SinkMessage};
use super::outputs::sink_stage;
use super::stop::Failure;

/// The writer's input and its task.
pub(super) struct WriterTask {
    pub(super) tx: mpsc::Sender<PendingCheckpoint>,
    pub(super) task: JoinHandle<()>,
}

/// Starts the writer for `storage`, committing on `sinks` and telling the sources through
/// `saved` which checkpoint it saved last.
pub(super) fn start_writer(
    storage: Arc<LocalStorage>,
    sinks: Vec<mpsc::Sender<SinkMessage>>,
    counters: Arc<Counters>,
    metrics: CheckpointMetrics,
    saved: Arc<AtomicU64>,
    failure: Failure,
) -> WriterTask {
    // One checkpoint waits while one is written: each holds its operators' states (with a
    // million keys, tens of megabytes), and the chain waits for room here before it takes the
    // next snapshot, rather than queue more or hold one more waiting.
    let (tx, rx) = mpsc::channel::<PendingCheckpoint>(1);
    let task = tokio::spawn(run_writer(
        rx, storage, sinks, counters, metrics, saved, failure,
    ));
    WriterTask { tx, task }
}

/// Saves checkpoints as their sinks acknowledge them, in order. A save refused because a newer
/// owner claimed the directory fails the run (nothing is committed): the run is no longer the
/// owner of its state.
async fn run_writer(
    mut rx: mpsc::Receiver<PendingCheckpoint>,
    storage: Arc<LocalStorage>,
    sinks: Vec<mpsc::Sender<SinkMessage>>,
    counters: Arc<Counters>,
    metrics: CheckpointMetrics,
    saved: Arc<AtomicU64>,
    failure: Failure,
) {
    while let Some(pending) = rx.recv().await {
        let id = pending.checkpoint.id.0;
        let snapshot_millis = pending.snapshot_time.as_millis() as u64;
        let mut acknowledged = true;
        for (index, ack) in pending.acks.into_iter().enumerate() {
            let sink = sink_stage(index);
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(checkpoint = id, %sink, %error, "checkpoint failed: a sink could not make its output durable");
                    acknowledged = false;
                }
                Err(_) => {
                    // It failed before the barrier and reported why.
                    tracing::error!(checkpoint = id, %sink, "checkpoint failed: the sink had stopped");
                    acknowledged = false;
                }
            }
        }
        if !acknowledged {
            metrics.failed();
            continue;
        }
        let started = Instant::now();
        let triggered = pending.triggered;
        let storage = storage.clone();
        let checkpoint = pending.checkpoint;
        match tokio::task::spawn_blocking(move || {
            storage.save_streamed(&checkpoint, Some(triggered))
        })
        .await
        {
            Ok(Ok(manifest)) => {
                tracing::info!(
                    checkpoint = id,
                    bytes = manifest.data_file_size,
                    millis = pending.triggered.elapsed().as_millis() as u64,
                    write_millis = started.elapsed().as_millis() as u64,
                    snapshot_millis,
                    "checkpoint completed"
                );
                counters.set_last_checkpoint(id);
                saved.fetch_max(id, Ordering::SeqCst);
                metrics.completed(pending.triggered.elapsed(), manifest.data_file_size);
                for sink in &sinks {
                    // A sink that is gone has failed, and said so itself.
                    let _ = sink.send(SinkMessage::Commit(id)).await;
                }
            }
            Ok(Err(error @ CheckpointError::Fenced { .. })) => {
                metrics.failed();
                tracing::error!(checkpoint = id, %error, "checkpoint refused: the directory has a newer owner; the run stops");
                failure.report(
                    crate::PipelineError::Fenced(error.to_string()),
                    "the checkpoint writer",
                );
                return;
            }
            Ok(Err(error)) => {
                metrics.failed();
                tracing::error!(checkpoint = id, %error, "checkpoint failed");
            }
            Err(error) => {
                metrics.failed();
                tracing::error!(checkpoint = id, %error, "checkpoint writer panicked");
            }
        }
    }
}

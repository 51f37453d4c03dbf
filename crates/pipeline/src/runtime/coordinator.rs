//! The checkpoint coordinator task: asks the sources for barriers every interval or on demand,
//! and turns a stop or a halt (a restore) into what the source threads see.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::stop::{SourceSignals, StopHandle};
use crate::control::Request;

/// What the coordinator hears from the [`crate::control::ControlHandle`]: its requests.
pub(super) type Inbox = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>;

/// What woke the coordinator.
enum Wake {
    Barrier,
    Stop,
    Request(Request),
}

/// Asks for a barrier every `interval` once the previous one is aligned, or at once when the
/// control handle asks; on a stop asks for a final one (when checkpointing), then tells the
/// sources to stop; on a halt (a restore) tells them to stop without one.
pub(super) async fn coordinate(
    interval: Option<i64>,
    mut last_id: u64,
    signals: SourceSignals,
    mut aligned: watch::Receiver<u64>,
    stop: StopHandle,
    inbox: Inbox,
) {
    let source_stop = signals.stop.clone();
    let halt = signals.halt.clone();
    // Held for the run: the next run's coordinator takes the inbox over.
    let mut inbox = inbox.lock().await;
    let period = interval.map(|interval| Duration::from_millis(interval.max(1) as u64));
    let mut now = false;
    loop {
        let wake = if now {
            Wake::Barrier
        } else {
            tokio::select! {
                _ = async { if let Some(period) = period { tokio::time::sleep(period).await } }, if period.is_some() => Wake::Barrier,
                _ = stop.stopped() => Wake::Stop,
                Some(request) = inbox.recv() => Wake::Request(request),
            }
        };
        match wake {
            Wake::Stop => {
                if period.is_some() {
                    last_id += 1;
                    signals.ask(last_id);
                }
                source_stop.store(true, Ordering::SeqCst);
                return;
            }
            Wake::Request(Request::Halt) => {
                halt.store(true, Ordering::SeqCst);
                source_stop.store(true, Ordering::SeqCst);
                return;
            }
            Wake::Request(Request::Trigger(reply)) => {
                // Without checkpoints the handle refuses before asking.
                let _ = reply.send(last_id + 1);
                now = period.is_some();
            }
            Wake::Barrier => {
                now = false;
                last_id += 1;
                signals.ask(last_id);
                let wanted = last_id;
                loop {
                    tokio::select! {
                        _ = aligned.wait_for(|id| *id >= wanted) => break,
                        _ = stop.stopped() => {
                            last_id += 1;
                            signals.ask(last_id);
                            source_stop.store(true, Ordering::SeqCst);
                            return;
                        }
                        Some(request) = inbox.recv() => match request {
                            Request::Halt => {
                                halt.store(true, Ordering::SeqCst);
                                source_stop.store(true, Ordering::SeqCst);
                                return;
                            }
                            // The next barrier goes out as soon as this one is aligned.
                            Request::Trigger(reply) => {
                                let _ = reply.send(last_id + 1);
                                now = true;
                            }
                        },
                    }
                }
            }
        }
    }
}

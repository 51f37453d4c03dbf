//! The floor for `scripts/bench.sh`: the benchmark workloads W1–W4 as a plain single-threaded
//! loop — read lines, parse each with serde_json into a struct of just the fields the workload
//! needs, compute with hash maps, write JSON Lines — with no framework at all. It emits the same
//! results, byte for byte, as `processor` on `configs/bench/*.yaml`, so the script can check them.
//!
//! Usage: `baseline w1|w2|w3|w4 INPUT OUTPUT [serde_json|sonic]`: the last argument picks the
//! JSON parser (serde_json by default; sonic-rs, a SIMD parser behind the same serde traits, for
//! the fastest loop that can be written by hand).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use rustc_hash::FxHashMap;
use serde::Deserialize;

/// Whether lines are parsed with sonic-rs rather than serde_json.
static SONIC: AtomicBool = AtomicBool::new(false);

/// Parses one line with the chosen parser.
fn parse<'a, T: Deserialize<'a>>(line: &'a str) -> anyhow::Result<T> {
    if SONIC.load(Ordering::Relaxed) {
        Ok(sonic_rs::from_str(line)?)
    } else {
        Ok(serde_json::from_str(line)?)
    }
}

/// Watermarks advance once per this many events, as the processor's batches do.
const BATCH: usize = 1024;
const OUT_OF_ORDERNESS: i64 = 2000;

fn parse_time(text: &str) -> anyhow::Result<i64> {
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("bad timestamp {text}"))?
        .timestamp_millis())
}

fn format_time(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct FullBid<'a> {
    timestamp: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    id: &'a str,
    auction: i64,
    bidder: i64,
    price: i64,
    channel: &'a str,
}

#[derive(Deserialize)]
struct AuctionPrice<'a> {
    timestamp: &'a str,
    auction: i64,
    price: i64,
}

#[derive(Deserialize)]
struct Auction<'a> {
    timestamp: &'a str,
    auction: i64,
}

#[derive(Deserialize)]
struct Bidder<'a> {
    timestamp: &'a str,
    bidder: i64,
}

fn window_line(
    out: &mut impl Write,
    key: i64,
    start: i64,
    end: i64,
    values: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{{\"key\":{key},\"window_start\":\"{}\",\"window_end\":\"{}\",{values},\"is_update\":false}}",
        format_time(start),
        format_time(end)
    )
}

/// Runs `per_line` over every line, and `on_watermark` every [`BATCH`] lines and at the end
/// (with `i64::MAX`).
fn drive(
    input: &str,
    mut per_line: impl FnMut(&str, &mut i64) -> anyhow::Result<()>,
    mut on_watermark: impl FnMut(i64) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(input).with_context(|| format!("open {input}"))?,
    );
    let mut max_time = i64::MIN;
    let mut count = 0u64;
    for line in reader.lines() {
        let line = line?;
        per_line(&line, &mut max_time)?;
        count += 1;
        if count % BATCH as u64 == 0 {
            on_watermark(max_time.saturating_sub(OUT_OF_ORDERNESS))?;
        }
    }
    on_watermark(i64::MAX)?;
    Ok(count)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (workload, input, output, parser) = match args.as_slice() {
        [_, workload, input, output] => (workload, input, output, "serde_json"),
        [_, workload, input, output, parser] => (workload, input, output, parser.as_str()),
        _ => bail!("usage: baseline w1|w2|w3|w4 INPUT OUTPUT [serde_json|sonic]"),
    };
    match parser {
        "serde_json" => {}
        "sonic" => SONIC.store(true, Ordering::Relaxed),
        other => bail!("unknown parser `{other}`: expected serde_json or sonic"),
    }
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(output).with_context(|| format!("create {output}"))?,
    );
    let started = std::time::Instant::now();
    let events = match workload.as_str() {
        "w1" => {
            let out_ref = &mut out;
            drive(
                input,
                |line, _| {
                    let bid: FullBid<'_> = parse(line)?;
                    let time = parse_time(bid.timestamp)?;
                    if bid.price >= 1000 && bid.channel != "partner" {
                        let mut ryu = ryu::Buffer::new();
                        writeln!(
                            out_ref,
                            "{{\"timestamp\":\"{}\",\"type\":\"{}\",\"id\":\"{}\",\"auction\":{},\"bidder\":{},\"channel\":\"{}\",\"price_usd\":{}}}",
                            format_time(time),
                            bid.kind,
                            bid.id,
                            bid.auction,
                            bid.bidder,
                            bid.channel,
                            ryu.format(bid.price as f64 / 100.0)
                        )?;
                    }
                    Ok(())
                },
                |_| Ok(()),
            )?
        }
        "w2" | "w3" => {
            let (size, slide) = if workload == "w2" {
                (10_000, 10_000)
            } else {
                (10_000, 2_000)
            };
            // Open windows by start, each with its per-auction accumulators (count, sum).
            let windows =
                std::cell::RefCell::new(BTreeMap::<i64, FxHashMap<i64, (u64, i64)>>::new());
            let out = std::cell::RefCell::new(&mut out);
            drive(
                input,
                |line, max_time| {
                    let (time, auction, price) = if workload == "w2" {
                        let bid: AuctionPrice<'_> = parse(line)?;
                        (parse_time(bid.timestamp)?, bid.auction, bid.price)
                    } else {
                        let bid: Auction<'_> = parse(line)?;
                        (parse_time(bid.timestamp)?, bid.auction, 0)
                    };
                    *max_time = (*max_time).max(time);
                    let mut windows = windows.borrow_mut();
                    let last_start = time.div_euclid(slide) * slide;
                    let mut start = last_start;
                    while start > time - size {
                        let entry = windows
                            .entry(start)
                            .or_default()
                            .entry(auction)
                            .or_insert((0, 0));
                        entry.0 += 1;
                        entry.1 += price;
                        start -= slide;
                    }
                    Ok(())
                },
                |watermark| {
                    let mut windows = windows.borrow_mut();
                    let mut out = out.borrow_mut();
                    while let Some((&start, _)) = windows.first_key_value() {
                        if start + size > watermark {
                            break;
                        }
                        let Some((_, keys)) = windows.pop_first() else {
                            break;
                        };
                        let mut keys: Vec<_> = keys.into_iter().collect();
                        keys.sort_unstable_by_key(|(auction, _)| *auction);
                        for (auction, (count, sum)) in keys {
                            let values = if workload == "w2" {
                                format!("\"count\":{count},\"sum_price\":{sum}")
                            } else {
                                format!("\"count\":{count}")
                            };
                            window_line(&mut **out, auction, start, start + size, &values)?;
                        }
                    }
                    Ok(())
                },
            )?
        }
        "w4" => {
            const GAP: i64 = 5_000;
            // Per bidder its open sessions (start, end, count); session ends ordered for firing.
            let sessions =
                std::cell::RefCell::new(FxHashMap::<i64, Vec<(i64, i64, u64)>>::default());
            let ends = std::cell::RefCell::new(BTreeSet::<(i64, i64, i64)>::new());
            let out = std::cell::RefCell::new(&mut out);
            drive(
                input,
                |line, max_time| {
                    let bid: Bidder<'_> = parse(line)?;
                    let time = parse_time(bid.timestamp)?;
                    *max_time = (*max_time).max(time);
                    let mut sessions = sessions.borrow_mut();
                    let mut ends = ends.borrow_mut();
                    let list = sessions.entry(bid.bidder).or_default();
                    let (mut start, mut end, mut count) = (time, time + GAP, 1u64);
                    list.retain(|&(s, e, c)| {
                        if s < end && start < e {
                            ends.remove(&(e, s, bid.bidder));
                            start = start.min(s);
                            end = end.max(e);
                            count += c;
                            false
                        } else {
                            true
                        }
                    });
                    list.push((start, end, count));
                    ends.insert((end, start, bid.bidder));
                    Ok(())
                },
                |watermark| {
                    let mut sessions = sessions.borrow_mut();
                    let mut ends = ends.borrow_mut();
                    let mut out = out.borrow_mut();
                    while let Some(&(end, start, bidder)) = ends.first() {
                        if end > watermark {
                            break;
                        }
                        ends.pop_first();
                        let mut count = 0;
                        if let Some(list) = sessions.get_mut(&bidder) {
                            if let Some(position) =
                                list.iter().position(|&(s, e, _)| s == start && e == end)
                            {
                                count = list.swap_remove(position).2;
                            }
                            if list.is_empty() {
                                sessions.remove(&bidder);
                            }
                        }
                        window_line(
                            &mut **out,
                            bidder,
                            start,
                            end,
                            &format!("\"count\":{count}"),
                        )?;
                    }
                    Ok(())
                },
            )?
        }
        other => bail!("unknown workload {other}: expected w1, w2, w3 or w4"),
    };
    out.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    eprintln!(
        "baseline {workload}: {events} events in {seconds:.2} s ({:.0} events/s), peak RSS {rss} KiB",
        events as f64 / seconds
    );
    Ok(())
}

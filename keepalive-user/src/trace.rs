//! The live loop: read records from the ring buffer, decode, print, until Ctrl-C or SIGTERM.

use std::io::ErrorKind;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use keepalive_common::names;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    decode::{Decoder, parse_record},
    event::Event,
    kernel,
    loader::{self, LoadOptions},
    output::{Summary, Writer},
};

/// Which events to print.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only these kinds (all when empty).
    pub kinds: Vec<String>,
}

impl EventFilter {
    fn wants(&self, e: &Event) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == e.detail.kind())
    }
}

pub async fn run(opts: &LoadOptions, filter: &EventFilter, mut out: Writer) -> Result<Summary> {
    let loader::Loaded { mut ebpf, types } = loader::load(opts)?;
    let hz = kernel::hz()?;
    let mut decoder = Decoder::new(hz, kernel::monotonic_to_realtime_ns(), types.reset_reasons);
    let ring = RingBuf::try_from(ebpf.take_map(names::EVENTS).context("map EVENTS")?)?;
    let lost_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map(names::LOST).context("map LOST")?)?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays open
    // for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    eprintln!("Tracing TCP keepalive, resets and timeouts (HZ={hz}). Ctrl-C to stop.");

    let mut summary = Summary::default();
    let mut stop = false;
    while !stop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let stopped = drain(guard.get_inner_mut(), &mut decoder, filter, &mut out, &mut summary)?;
                guard.clear_ready();
                stop = stopped;
            }
            _ = sigint.recv() => stop = true,
            _ = sigterm.recv() => stop = true,
        }
    }
    // Whatever the kernel queued before we stopped still counts.
    let _ = drain(ring.get_mut(), &mut decoder, filter, &mut out, &mut summary)?;
    summary.lost = lost_map
        .get(&0, 0)
        .map(|per_cpu| per_cpu.iter().sum())
        .unwrap_or(0);
    match out.summary(&summary) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(summary)
}

/// Reads every queued record. Returns true when the reader of our output went away
/// (`keepalive trace | head -1`): then we stop quietly.
fn drain(
    ring: &mut RingBuf<MapData>,
    decoder: &mut Decoder,
    filter: &EventFilter,
    out: &mut Writer,
    summary: &mut Summary,
) -> Result<bool> {
    while let Some(item) = ring.next() {
        summary.events += 1;
        let record = match parse_record(&item) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("skipping a malformed kernel record: {e}");
                continue;
            }
        };
        let event = decoder.decode(&record);
        if !filter.wants(&event) {
            continue;
        }
        *summary
            .by_kind
            .entry(event.detail.kind().to_string())
            .or_default() += 1;
        match out.event(&event) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(true),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

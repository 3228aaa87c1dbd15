//! The live loop: read records from the ring buffer, decode, hand them to the pipeline, until
//! Ctrl-C, SIGTERM, or the pipeline is done.

use std::time::Duration;

use anyhow::Result;
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use keepalive_common::{Life, names};
use time::OffsetDateTime;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    decode::{Decoder, Owner, Parsed},
    event::Event,
    host::cgroup::CgroupNames,
    host::procs::ProcessTable,
    host::snapshot,
    kernel::loader::LoadOptions,
    kernel::records::{KernelEvents, drain_ring},
    pipeline::{Flow, KernelCounts, Pipeline},
};

pub async fn run(
    opts: &LoadOptions,
    workloads: &CgroupNames,
    pipeline: &mut Pipeline,
) -> Result<()> {
    let mut kernel = KernelEvents::open(opts, Some(workloads))?;
    let mut procs = ProcessTable::default();
    assign_cookies();
    return_freed_memory();
    let lost_map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(kernel.take_map(names::LOST)?)?;
    let emitted_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(kernel.take_map(names::EMITTED)?)?;
    let ordinary_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(kernel.take_map(names::ORDINARY_ENDS)?)?;
    let mut lives: HashMap<MapData, u64, Life> = HashMap::try_from(kernel.take_map(names::LIVES)?)?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // The kernel wakes us only when records pile up (batched wake-ups), so the ring is also
    // polled; verdicts wait a moment after a close for the reset and error that follow it.
    // A quiet host is polled less and less often, down to POLL_QUIET: an always-on tracer
    // should cost next to nothing while nothing happens.
    let mut poll_every = POLL;
    let poll = tokio::time::sleep(POLL);
    tokio::pin!(poll);
    let mut look_for_enforce = tokio::time::interval(LOOK_FOR_ENFORCE);
    let mut shrink = tokio::time::interval_at(tokio::time::Instant::now() + SHRINK, SHRINK);
    eprintln!(
        "Tracing TCP keepalive, resets and timeouts ({} mode, HZ={}). Ctrl-C to stop.",
        kernel.mode().name(),
        kernel.hz()
    );

    // Streams of running `keepalive enforce`s, found pinned.
    let mut enforced: Vec<(std::path::PathBuf, RingBuf<MapData>)> = vec![];
    let mut flow = Flow::Continue;
    while flow == Flow::Continue {
        tokio::select! {
            woken = kernel.woken() => {
                woken?;
                flow = kernel.drain(|d, r, e| deliver(&mut procs, workloads, pipeline, d, r, e))?;
                // Busy again: verdicts of what closed come out promptly.
                poll_every = POLL;
                let soon = tokio::time::Instant::now() + POLL;
                if poll.deadline() > soon {
                    poll.as_mut().reset(soon);
                }
            }
            _ = &mut poll => {
                let received = kernel.received();
                flow = kernel.drain(|d, r, e| deliver(&mut procs, workloads, pipeline, d, r, e))?;
                poll_every = if kernel.received() != received || pipeline.settling() {
                    POLL
                } else {
                    (poll_every * 2).min(POLL_QUIET)
                };
                poll.as_mut().reset(tokio::time::Instant::now() + poll_every);
                for (_, stream) in &mut enforced {
                    if flow == Flow::Continue {
                        flow = drain_ring(stream, kernel.decoder(), |d, r, e| deliver(&mut procs, workloads, pipeline, d, r, e))?.0;
                    }
                }
                if flow == Flow::Continue {
                    flow = pipeline.tick(OffsetDateTime::now_utc())?;
                }
                pipeline.update_gauges(|| (counter_total(&lost_map), counter_total(&ordinary_map)));
            }
            _ = look_for_enforce.tick() => adopt_enforce_streams(&mut enforced),
            _ = shrink.tick() => {
                sweep_ended(&mut lives);
                kernel.decoder().shrink();
                pipeline.shrink();
                procs.shrink();
                return_freed_memory();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        if flow == Flow::Continue {
            flow = pipeline.flush()?;
        }
    }
    if flow == Flow::Continue {
        // Whatever the kernel queued before we stopped still counts.
        let _ = kernel.drain(|d, r, e| deliver(&mut procs, workloads, pipeline, d, r, e))?;
        pipeline.finish()?;
    }
    // Everything the kernel queued has been read by now (when the run was not cut short); a
    // difference would be records lost between the ring and us, which must not pass
    // silently either.
    let unread = match flow {
        Flow::Continue => counter_total(&emitted_map).saturating_sub(kernel.received()),
        Flow::Stop => 0,
    };
    pipeline.kernel_counts(KernelCounts {
        lost: counter_total(&lost_map),
        lost_by_kind: lost_by_kind(&lost_map),
        unread,
        ordinary_ends: counter_total(&ordinary_map),
        skipped_runs: kernel.skipped_runs(),
    });
    Ok(())
}

/// Hands an event to the pipeline, its owner looked up in /proc when the kernel could not
/// tell (a connection older than the trace), and taught to the decoder for its next events.
fn deliver(
    procs: &mut ProcessTable,
    workloads: &CgroupNames,
    pipeline: &mut Pipeline,
    decoder: &mut Decoder,
    record: &Parsed,
    mut event: Event,
) -> Result<Flow> {
    if event.pid.is_none()
        && let Some((pid, comm)) = procs.lookup(record.record.ino)
    {
        let owner = Owner {
            pid,
            comm,
            workload: workloads.of_pid(pid),
        };
        event.pid = Some(owner.pid);
        event.comm = Some(owner.comm.clone());
        event.workload = owner.workload.clone();
        decoder.set_owner(record.record.skaddr, owner);
    }
    Ok(pipeline.event(&event)?)
}

/// How often the ring buffer is read without a wake-up, and verdicts are let out...
const POLL: Duration = Duration::from_millis(50);
/// ... and how seldom, at most, once nothing has come for a while (each poll is a wake-up,
/// tens of microseconds on a virtual machine).
const POLL_QUIET: Duration = Duration::from_millis(400);
/// How often pinned streams of `keepalive enforce`s are looked for.
const LOOK_FOR_ENFORCE: Duration = Duration::from_secs(1);
/// How often tables give back memory they no longer need.
const SHRINK: Duration = Duration::from_secs(10);

/// Gives freed heap back to the system. glibc keeps it unless asked: startup frees tens of
/// megabytes (the kernel's BTF, /proc/kallsyms), and tables that grew with the number of
/// connections leave their old, smaller copies behind. A tracer that runs for weeks should
/// hold what it uses; called at start and every 10 s (it takes well under a millisecond).
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Removes the kernel's entries of connections that ended a while ago, once the table is
/// half full. The kernel leaves them for the next socket at the same address, which takes
/// one over in place (no insertion, no removal: a freed socket's memory is usually reused
/// at once); addresses never reused would keep theirs for good and, enough of them, fill
/// the table. Removing is left until it matters because it races with a takeover: a
/// program holding an entry it is about to take over writes into a removed one, and that
/// connection's start is lost (a 1-minute soak sweeping every 10 s lost 32 of 28,449 ends,
/// one without the sweep none; later soaks without it lost some too, so suspected, not
/// proven). Only entries dead for [`SWEEP_AFTER`] go, which makes it rarer: a recently
/// freed address is the one being reused.
fn sweep_ended(lives: &mut HashMap<MapData, u64, Life>) {
    let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
        return;
    };
    let now = Duration::from(now).as_nanos() as u64;
    let old =
        |l: &Life| l.alive == 0 && now.saturating_sub(l.ended_ns) > SWEEP_AFTER.as_nanos() as u64;
    let entries: Vec<(u64, bool)> = lives
        .iter()
        .filter_map(Result::ok)
        .map(|(k, l)| (k, old(&l)))
        .collect();
    if entries.len() < keepalive_common::CONNECTION_LIFE_SLOTS as usize / 2 {
        return;
    }
    for (key, _) in entries.into_iter().filter(|(_, old)| *old) {
        if lives.get(&key, 0).is_ok_and(|l| old(&l)) {
            let _ = lives.remove(&key);
        }
    }
}

/// How long a connection's entry stays after it ended before the sweep removes it.
const SWEEP_AFTER: Duration = Duration::from_secs(60);

/// Opens the pinned streams of `keepalive enforce`s started since the last look, and lets go
/// of those whose enforce has stopped.
fn adopt_enforce_streams(streams: &mut Vec<(std::path::PathBuf, RingBuf<MapData>)>) {
    streams.retain(|(path, _)| path.exists());
    for path in crate::enforce::pinned_streams() {
        if streams.iter().any(|(p, _)| *p == path) {
            continue;
        }
        match MapData::from_pin(&path)
            .map(aya::maps::Map::RingBuf)
            .and_then(RingBuf::try_from)
        {
            Ok(ring) => streams.push((path, ring)),
            Err(e) => log::info!("cannot open {}: {e}", path.display()),
        }
    }
}

/// The sum over CPUs and slots of a per-CPU counter (LOST by kind, or EMITTED).
fn counter_total(counter: &PerCpuArray<MapData, u64>) -> u64 {
    (0..counter.len())
        .filter_map(|i| counter.get(&i, 0).ok())
        .map(|per_cpu| per_cpu.iter().sum::<u64>())
        .sum()
}

/// Lost records by kind name (kinds with none left out).
fn lost_by_kind(lost: &PerCpuArray<MapData, u64>) -> std::collections::BTreeMap<String, u64> {
    let mut by_kind = std::collections::BTreeMap::new();
    for i in 0..lost.len() {
        let n: u64 = lost.get(&i, 0).map(|c| c.iter().sum()).unwrap_or(0);
        if n > 0 {
            // Two record kinds can make one event kind (a close with or without its life).
            let name = crate::decode::kind_name(i as u8).unwrap_or("unknown");
            *by_kind.entry(name.to_string()).or_default() += n;
        }
    }
    by_kind
}

/// Asking sock_diag about every socket makes the kernel assign each its cookie, so sockets
/// older than the tracer are named by their cookie like the others (and like `ss -e`).
fn assign_cookies() {
    let mut namespaces = vec![None];
    namespaces.extend(crate::host::netns::named().into_iter().map(Some));
    for ns in namespaces {
        let result = match &ns {
            None => snapshot::tcp_sockets(0),
            Some(path) => snapshot::tcp_sockets_in(&path.to_string_lossy(), 0),
        };
        match result {
            Ok(sockets) => log::debug!("{} sockets in {ns:?} before tracing", sockets.len()),
            Err(e) => log::info!("no snapshot of {ns:?}: {e:#}"),
        }
    }
}

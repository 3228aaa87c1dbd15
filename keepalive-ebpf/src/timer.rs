//! The keepalive timer: which of all the kernel's timers is a socket's keepalive timer
//! (tracepoint mode compares the function address, kprobe mode hooks the function), and what
//! one run did: sent a probe (the probe count rose), saw an answer (probes were out and the
//! count is back to zero), or gave up (the run reset, reported an error or closed the socket).
//!
//! Cost, per run: two field reads and two map lookups at entry, one field read at exit. A
//! socket's identity and settings are read once, on its first run, into [`KNOWN`]; a record is
//! built from that copy only when a run reports something, and at most one per run: an
//! answer found at entry is reported at exit, in the probe's record when the run sends one.

use aya_ebpf::{
    EbpfContext,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use keepalive_common::{KeepaliveSettings, Record, flag, kind};

use crate::{
    LOST, count, fill_new_record,
    sock::{Address, read, read_identity, read_keepalive, tcp_state, wanted},
    submit,
};

/// A socket whose keepalive timer ran while tracing: what its records repeat on every run,
/// and the probes reported and not answered yet.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct KnownSocket {
    cookie: u64,
    ino: u64,
    saddr: [u8; 16],
    daddr: [u8; 16],
    netns: u32,
    sport: u16,
    dport: u16,
    family: u16,
    /// Probes reported and not answered yet: a run that finds the count back at zero reports
    /// the answer; one that finds it above reports each probe past this.
    reported: u8,
    /// The filters matched it (decided once; closing clears the ports later).
    wanted: u8,
    /// As read on the first run (settings change rarely once a connection is up; a timeout
    /// reads them afresh, since that is what the verdict and its advice quote).
    keepalive: KeepaliveSettings,
}

/// Sockets whose keepalive timer ran, by address; an entry goes when the socket is freed
/// (tcp_destroy_sock). Preallocated: the programs run in timer context, where allocating
/// map memory is unsafe before Linux 6.1 and new on 6.1. Not an LRU: eviction would drop
/// answers silently. Past its size a socket is followed without the copy (every run reads
/// its fields), and an answer to its probes cannot be recognised: that is counted as lost.
#[map]
static KNOWN: HashMap<u64, KnownSocket> =
    HashMap::with_max_entries(keepalive_common::KNOWN_SOCKET_SLOTS, 0);

/// The keepalive timer running on this CPU (timers do not nest on one CPU).
#[map]
static TIMER: PerCpuArray<TimerRun> = PerCpuArray::with_max_entries(1, 0);

#[derive(Clone, Copy)]
#[repr(C)]
struct TimerRun {
    sk: u64,
    probes_before: u8,
    state_before: u8,
    timeout_emitted: u8,
    /// `KnownSocket::reported` after entry; `UNTRACKED` when the socket has no entry.
    reported: u8,
    /// Probes this run found answered at entry, not reported yet.
    answered: u8,
}

/// `TimerRun::reported` of a socket that did not fit in [`KNOWN`].
const UNTRACKED: u8 = u8::MAX;

fn timer_run() -> Option<&'static mut TimerRun> {
    TIMER.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Room to build a record or an entry in: the BPF stack is 512 bytes for a program and
/// the functions it calls together, and older verifiers (6.1) count every frame in full.
/// Per CPU, and only the keepalive timer's programs use it: a timer run is not interrupted
/// by another on its CPU.
#[derive(Clone, Copy)]
#[repr(C)]
struct Scratch {
    record: Record,
    known: KnownSocket,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

fn scratch() -> Option<&'static mut Scratch> {
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// `sk`'s identity read from the socket into the scratch record; None when it is not
/// wanted by the filters.
fn read_fresh(sk: u64) -> Option<&'static mut Record> {
    let r = &mut scratch()?.record;
    fill_new_record(r, 0);
    read_identity(Address(sk), r);
    wanted(r).then_some(r)
}

/// The entry of `sk`, made on its first run from the socket's fields; None when the table
/// is full.
fn known(sk: u64) -> Option<&'static mut KnownSocket> {
    let cookie: u64 = read(sk, config!(offsets.cookie));
    if let Some(k) = KNOWN.get_ptr_mut(&sk) {
        let k = unsafe { &mut *k };
        // A socket found from its timer may not have a cookie yet: take it once it has one.
        if k.cookie == 0 {
            k.cookie = cookie;
        }
        if k.cookie == cookie {
            return Some(k);
        }
        // Another socket at the same address: the old one was freed without its
        // tcp_destroy_sock seen (the kernel skips programs now and then), and its entry
        // would hide this one (its filters' decision, its probes).
        let _ = KNOWN.remove(&sk);
    }
    let s = scratch()?;
    fill_new_record(&mut s.record, 0);
    read_identity(Address(sk), &mut s.record);
    let r = &s.record;
    s.known = KnownSocket {
        cookie: r.cookie,
        ino: r.ino,
        saddr: r.saddr,
        daddr: r.daddr,
        netns: r.netns,
        sport: r.sport,
        dport: r.dport,
        family: r.family,
        reported: 0,
        wanted: wanted(r) as u8,
        keepalive: read_keepalive(Address(sk)),
    };
    KNOWN.insert(&sk, &s.known, 0).ok()?;
    KNOWN.get_ptr_mut(&sk).map(|k| unsafe { &mut *k })
}

/// A record of this socket's keepalive timer, built in the scratch record.
fn timer_record(
    kind: u8,
    sk: u64,
    k: &KnownSocket,
    state: u8,
    probes_out: u8,
) -> Option<&'static mut Record> {
    let r = &mut scratch()?.record;
    fill_new_record(r, kind);
    r.skaddr = sk;
    r.cookie = k.cookie;
    r.ino = k.ino;
    r.saddr = k.saddr;
    r.daddr = k.daddr;
    r.netns = k.netns;
    r.sport = k.sport;
    r.dport = k.dport;
    r.family = k.family;
    r.state = state;
    r.flags = flag::HAS_KEEPALIVE;
    r.keepalive = k.keepalive;
    r.keepalive.probes_out = probes_out;
    Some(r)
}

/// The keepalive timer of `sk` starts running: remember the probe count, and whether earlier
/// probes were answered.
pub fn entered<C: EbpfContext>(ctx: &C, sk: u64) {
    let Some(run) = timer_run() else { return };
    // The last run's exit was not seen (the kernel skips programs now and then): its answer
    // is reported now rather than never.
    if run.sk != 0 && run.answered != 0 {
        report_answer(ctx, run.sk, run);
    }
    run.sk = 0;
    run.answered = 0;
    let probes_before: u8 = read(sk, config!(offsets.probes_out));
    let state: u8 = read(sk, config!(offsets.state));
    let reported = match known(sk) {
        Some(k) => {
            if k.wanted == 0 {
                return;
            }
            // Probes were out and the count is back to zero: only an answer from the peer
            // (an ACK or data) resets it. Reported at exit, ahead of the probe this run may
            // send.
            if probes_before == 0 && k.reported != 0 {
                run.answered = k.reported;
                k.reported = 0;
            }
            k.reported
        }
        None => {
            if read_fresh(sk).is_none() {
                return;
            }
            UNTRACKED
        }
    };
    run.sk = sk;
    run.probes_before = probes_before;
    run.state_before = state;
    run.timeout_emitted = 0;
    run.reported = reported;
}

/// The keepalive timer of `sk` is done: a higher probe count means it sent a probe.
pub fn left<C: EbpfContext>(ctx: &C, sk: u64) {
    let Some(run) = timer_run() else { return };
    if run.sk == 0 || run.sk != sk {
        return;
    }
    run.sk = 0;
    if run.timeout_emitted != 0 {
        return;
    }
    let probes_after: u8 = read(sk, config!(offsets.probes_out));
    if run.reported != UNTRACKED {
        // Compared with the count last reported rather than the one at entry, so a probe
        // whose run went unseen is still reported, with its number, at the next run.
        if probes_after <= run.reported {
            if run.answered != 0 {
                report_answer(ctx, sk, run);
            }
            return;
        }
        let Some(k) = KNOWN.get_ptr_mut(&sk).map(|k| unsafe { &mut *k }) else {
            return;
        };
        let reported = k.reported;
        k.reported = probes_after;
        if let Some(r) = timer_record(kind::KEEPALIVE_PROBE, sk, k, run.state_before, probes_after)
        {
            if run.answered != 0 {
                r.flags |= flag::ANSWERED_FIRST;
                r.arg1 = run.answered as u32;
                run.answered = 0;
            }
            probes(ctx, r, reported, probes_after);
        }
    } else {
        if probes_after <= run.probes_before {
            return;
        }
        // The table was full: the answer to this probe cannot be recognised; say so.
        count(&LOST, kind::KEEPALIVE_ANSWERED as u32);
        let Some(r) = read_fresh(sk) else { return };
        r.kind = kind::KEEPALIVE_PROBE;
        r.state = run.state_before;
        r.flags = flag::HAS_KEEPALIVE;
        r.keepalive = read_keepalive(Address(sk));
        probes(ctx, r, run.probes_before, probes_after);
    }
}

/// The answer `run` found at entry to `sk`'s timer, as a record of its own.
fn report_answer<C: EbpfContext>(ctx: &C, sk: u64, run: &mut TimerRun) {
    let answered = run.answered;
    run.answered = 0;
    let Some(k) = KNOWN.get_ptr_mut(&sk).map(|k| unsafe { &*k }) else {
        // Freed since (its tcp_destroy_sock dropped the entry): say it was lost.
        count(&LOST, kind::KEEPALIVE_ANSWERED as u32);
        return;
    };
    if let Some(r) = timer_record(kind::KEEPALIVE_ANSWERED, sk, k, run.state_before, 0) {
        r.arg0 = answered as u32;
        submit(ctx, r);
    }
}

/// Kprobe mode's return probe: no arguments, so the socket whose run this CPU is in.
pub fn left_current<C: EbpfContext>(ctx: &C) {
    if let Some(sk) = timer_run().map(|run| run.sk) {
        left(ctx, sk);
    }
}

/// One record per probe past `from` up to `to` (bounded: the kernel allows at most 127
/// probes, and runs see one each).
fn probes<C: EbpfContext>(ctx: &C, r: &mut Record, from: u8, to: u8) {
    let mut n = from;
    for _ in 0..4 {
        if n >= to {
            break;
        }
        n += 1;
        r.arg0 = n as u32;
        submit(ctx, r);
        // The answer goes with the first probe only.
        r.flags &= !flag::ANSWERED_FIRST;
        r.arg1 = 0;
    }
}

/// Inside the keepalive timer, the first reset, error or close of its socket means the timer
/// gave up: report that first, so the cause precedes its effects in the stream. Settings
/// are read afresh here: the verdict and its advice quote them.
pub fn timeout_first<C: EbpfContext>(ctx: &C, sk: u64, r: &Record) {
    let Some(run) = timer_run() else { return };
    if run.sk != sk || run.timeout_emitted != 0 || run.state_before == tcp_state::FIN_WAIT2 {
        return;
    }
    run.timeout_emitted = 1;
    if run.answered != 0 {
        report_answer(ctx, sk, run);
    }
    // Probes sent in runs we did not see (the kernel skips programs now and then; left()
    // reports such a probe at the next run, but this run is the last one): first, with
    // their numbers, so the timeout follows every probe it counts.
    if run.reported != UNTRACKED && run.probes_before > run.reported {
        if let Some(k) = KNOWN.get_ptr_mut(&sk).map(|k| unsafe { &*k }) {
            if let Some(p) = timer_record(
                kind::KEEPALIVE_PROBE,
                sk,
                k,
                run.state_before,
                run.probes_before,
            ) {
                probes(ctx, p, run.reported, run.probes_before);
            }
        }
    }
    let mut t = *r;
    t.kind = kind::KEEPALIVE_TIMEOUT;
    t.state = run.state_before;
    t.arg0 = run.probes_before as u32;
    t.arg1 = 0;
    t.flags = flag::HAS_KEEPALIVE;
    t.keepalive = read_keepalive(Address(sk));
    let _ = KNOWN.remove(&sk);
    submit(ctx, &t);
}

/// The socket is freed: its address may be reused by another.
pub fn forget(sk: u64) {
    let _ = KNOWN.remove(&sk);
}

//! The keepalive timer: which of all the kernel's timers is a socket's keepalive timer
//! (tracepoint mode compares the function address, kprobe mode hooks the function), and what
//! one run did: sent a probe (the probe count rose), saw an answer (probes were out and the
//! count is back to zero), or gave up (the run reset, reported an error or closed the socket).
//!
//! Cost, per run: two field reads and a per-CPU slot at entry; at exit one field read and
//! one lookup in [`KNOWN`], where a socket's identity and settings were read once, on its
//! first run. A record is built from that copy only when a run reports something, and at
//! most one per run: an answer rides in the record of the probe the same run sends.

use aya_ebpf::{
    EbpfContext,
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use keepalive_common::{KeepaliveSettings, Record, flag, kind};

use crate::{
    record::{LOST, count, init_record, submit},
    sock::{Address, read_field, read_identity, read_keepalive, tcp_state, wanted},
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

/// Sockets whose keepalive timer ran, by address; an entry goes when the socket's close is
/// sent (a connection whose timer ran is of interest), or when it is freed (with
/// `all_states`, tcp_destroy_sock). Preallocated: the programs run in timer context, where allocating
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
}

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
    init_record(r, 0);
    read_identity(Address(sk), r);
    wanted(r).then_some(r)
}

/// The entry of `sk`, made on its first run from the socket's fields; None when the table
/// is full.
fn known(sk: u64) -> Option<&'static mut KnownSocket> {
    let cookie: u64 = read_field(sk, config!(offsets.cookie));
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
    init_record(&mut s.record, 0);
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
    // Its end is of interest now, and its close removes this entry.
    crate::life::mark(sk);
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
    init_record(r, kind);
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

/// The keepalive timer of `sk` starts running: remember its probe count and state on this
/// CPU. Nothing else: the exit decides, with one table lookup for the run.
pub fn entered<C: EbpfContext>(_ctx: &C, sk: u64) {
    let Some(run) = timer_run() else { return };
    run.sk = sk;
    run.probes_before = read_field(sk, config!(offsets.probes_out));
    run.state_before = read_field(sk, config!(offsets.state));
    run.timeout_emitted = 0;
}

/// The keepalive timer of `sk` is done: probes that were out and are no longer mean the peer
/// answered; a higher probe count means it sent a probe. At most one record either way.
pub fn left<C: EbpfContext>(ctx: &C, sk: u64) {
    let Some(run) = timer_run() else { return };
    if run.sk == 0 || run.sk != sk {
        return;
    }
    run.sk = 0;
    if run.timeout_emitted != 0 {
        return;
    }
    let probes_after: u8 = read_field(sk, config!(offsets.probes_out));
    let Some(k) = known(sk) else {
        untracked(ctx, sk, run, probes_after);
        return;
    };
    if k.wanted == 0 {
        return;
    }
    let answered = answer(run, k);
    // Compared with the count last reported rather than the one at entry, so a probe whose
    // run went unseen is still reported, with its number, at the next run.
    if probes_after <= k.reported {
        report_answer(ctx, sk, k, run.state_before, answered);
        if answered != 0 {
            crate::drops::unfollow(sk, ends(k));
        }
        return;
    }
    let reported = k.reported;
    k.reported = probes_after;
    // Probes go out unanswered: what this host drops of the connection matters now.
    if reported == 0 && answered == 0 {
        crate::drops::follow(sk, k.cookie, k.netns, ends(k));
    }
    if let Some(r) = timer_record(kind::KEEPALIVE_PROBE, sk, k, run.state_before, probes_after) {
        if answered != 0 {
            r.flags |= flag::ANSWERED_FIRST;
            r.arg1 = answered as u32;
        }
        probes(ctx, r, reported, probes_after);
    }
}

/// The connection's ends, for [`crate::drops`].
#[inline(always)]
fn ends(k: &KnownSocket) -> crate::drops::Ends<'_> {
    crate::drops::Ends {
        local: &k.saddr,
        local_port: k.sport,
        remote: &k.daddr,
        remote_port: k.dport,
    }
}

/// Probes were out and the count was back to zero when the run started: only an answer from
/// the peer (an ACK or data) resets it. Returns how many probes it answered (0: none).
fn answer(run: &TimerRun, k: &mut KnownSocket) -> u8 {
    if run.probes_before != 0 || k.reported == 0 {
        return 0;
    }
    let answered = k.reported;
    k.reported = 0;
    answered
}

/// A record of its own for `answered` probes answered (none when 0), the socket then in
/// `state`: no probe is sent to carry it.
fn report_answer<C: EbpfContext>(ctx: &C, sk: u64, k: &KnownSocket, state: u8, answered: u8) {
    if answered != 0
        && let Some(r) = timer_record(kind::KEEPALIVE_ANSWERED, sk, k, state, 0)
    {
        r.arg0 = answered as u32;
        submit(ctx, r);
    }
}

/// A run of a socket that did not fit in [`KNOWN`]: its probes are reported from fresh reads,
/// and answers to them cannot be recognised (counted as lost).
fn untracked<C: EbpfContext>(ctx: &C, sk: u64, run: &TimerRun, probes_after: u8) {
    if probes_after <= run.probes_before {
        return;
    }
    let Some(r) = read_fresh(sk) else { return };
    count(&LOST, kind::KEEPALIVE_ANSWERED as u32);
    r.kind = kind::KEEPALIVE_PROBE;
    r.state = run.state_before;
    r.flags = flag::HAS_KEEPALIVE;
    r.keepalive = read_keepalive(Address(sk));
    probes(ctx, r, run.probes_before, probes_after);
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
/// are read afresh here: the verdict and its advice quote them. (Callers have checked the
/// filters on `r`, the same socket.)
pub fn timeout_first<C: EbpfContext>(ctx: &C, sk: u64, r: &Record) {
    let Some(run) = timer_run() else { return };
    if run.sk != sk || run.timeout_emitted != 0 || run.state_before == tcp_state::FIN_WAIT2 {
        return;
    }
    run.timeout_emitted = 1;
    if let Some(k) = known(sk) {
        let answered = answer(run, k);
        report_answer(ctx, sk, k, run.state_before, answered);
        // Probes sent in runs we did not see (the kernel skips programs now and then; a
        // later run would report them, but this run is the last one): first, with their
        // numbers, so the timeout follows every probe it counts.
        if run.probes_before > k.reported {
            let reported = k.reported;
            if let Some(p) = timer_record(
                kind::KEEPALIVE_PROBE,
                sk,
                k,
                run.state_before,
                run.probes_before,
            ) {
                probes(ctx, p, reported, run.probes_before);
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
pub fn remove_known(sk: u64) {
    let _ = KNOWN.remove(&sk);
}

/// The connection `sk`, in `state`, closes: probes the peer answered since the last timer
/// run (an answer is seen only when the timer runs again, and a connection may end first)
/// are reported now, before the close, and its entry goes.
pub fn closed<C: EbpfContext>(ctx: &C, sk: u64, state: u8) {
    let Some(k) = KNOWN.get_ptr_mut(&sk) else {
        return;
    };
    let k = unsafe { &mut *k };
    let cookie: u64 = read_field(sk, config!(offsets.cookie));
    if k.cookie == cookie
        && k.wanted != 0
        && k.reported != 0
        && read_field(sk, config!(offsets.probes_out)) == 0
    {
        report_answer(ctx, sk, k, state, k.reported);
    }
    let _ = KNOWN.remove(&sk);
}

//! A connection's life kept in the kernel. By default the transitions that start and close
//! a connection (connect, established, the application's close) are folded into one entry
//! per socket and sent with its CLOSE as one record: a busy host makes millions of short
//! connections, and a record per transition cost each of them seven records and the
//! reader's time. With `all_states` every transition is a record of its own instead, and
//! so is every transition of a connection that does not fit in [`LIVES`].

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use core::mem::MaybeUninit;

use keepalive_common::{CONNECTION_LIFE_SLOTS, Life, life_mark as mark, owner_from};

use crate::sock::{
    Object, Typed, keepalive_on,
    tcp_state::{
        CLOSE as TCP_CLOSE, CLOSING as TCP_CLOSING, ESTABLISHED as TCP_ESTABLISHED,
        FIN_WAIT1 as TCP_FIN_WAIT1, FIN_WAIT2 as TCP_FIN_WAIT2, LAST_ACK as TCP_LAST_ACK,
        SYN_SENT as TCP_SYN_SENT,
    },
};

/// Connection ends judged ordinary and sent nowhere (one slot, per CPU).
#[map]
static ORDINARY_ENDS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// By socket address. A connection's end leaves its entry dead (`alive` 0) rather than
/// removing it: the kernel reuses a freed socket's memory for the next one, whose start then
/// takes the entry over in place, so a connection costs no insertion and no removal (two
/// locked table operations, most of what keeping a start cost). Once the table is half
/// full, user space removes entries long dead (`sweep_ended` in keepalive-user's trace.rs),
/// so addresses never reused do not fill it. Preallocated (transitions run in softirq context too), and not an LRU: eviction would
/// drop a connection's start silently. When it is full, a connection's transitions are sent
/// as they happen.
#[map]
static LIVES: HashMap<u64, Life> = HashMap::with_max_entries(CONNECTION_LIFE_SLOTS, 0);

/// The entry of the connection at `key`, if it has one (a dead one is another's past), in
/// the table (not copied to the stack): [`end`] it once its close is sent.
#[inline(always)]
pub fn get(key: u64) -> Option<&'static mut Life> {
    let l = unsafe { &mut *LIVES.get_ptr_mut(&key)? };
    (l.alive != 0).then_some(l)
}

/// A fresh entry for the connection starting at `key`: the dead entry its address's last
/// socket left, zeroed in place, or a new one; None when the table is full.
#[inline(always)]
fn start(key: u64) -> Option<&'static mut Life> {
    let l = match LIVES.get_ptr_mut(&key) {
        Some(l) => l,
        None => {
            let mut slot = MaybeUninit::uninit();
            LIVES.insert(&key, empty(&mut slot), 0).ok()?;
            LIVES.get_ptr_mut(&key)?
        }
    };
    crate::record::zero(l);
    let l = unsafe { &mut *l };
    l.alive = 1;
    Some(l)
}

/// Folds the transition `old` -> `new` of the socket at `key` (not one to CLOSE), whose
/// data retransmissions unanswered are `retransmits` and whose keepalive is on when
/// `keepalive` is [`mark::KEEPALIVE`], into its entry; false
/// when it must be sent as a record: no room, or an application close with data still
/// unacknowledged (the verdict is due then, not when the orphan gives up later).
/// A function of its own: its entry on the stack would otherwise add to the state-change
/// program's frame, and older kernels (6.1) refuse a call chain past 512 bytes.
#[inline(never)]
pub fn fold(key: u64, old: u8, new: u8, retransmits: u8, keepalive: u8) -> bool {
    if old == TCP_CLOSE && new == TCP_SYN_SENT {
        // connect(), in the caller's context: the owner.
        let Some(l) = start(key) else {
            return false;
        };
        owned_by_current_task(l, owner_from::CONNECT);
        return true;
    }
    // Read here, not for connect(), which does not use it: a helper call is not free.
    let now = unsafe { bpf_ktime_get_ns() };
    if new == TCP_ESTABLISHED {
        // A connect() seen: the same connection. Otherwise (accepted, or a connect() that
        // did not fit) its start is here, over whatever the address held.
        let seen = if old == TCP_SYN_SENT { get(key) } else { None };
        let Some(l) = seen.or_else(|| start(key)) else {
            return false;
        };
        l.life.established_ns = now;
        l.marks |= keepalive;
        return true;
    }
    // The application closes (close() or shutdown(), in its context).
    let Some(l) = get(key) else {
        return false;
    };
    if retransmits != 0 {
        return false;
    }
    l.marks |= keepalive;
    l.life.app_closed_ns = now;
    l.life.app_closed_from = old as u8;
    if l.life.owner_from == owner_from::UNKNOWN {
        owned_by_current_task(l, owner_from::CLOSE);
    }
    true
}

/// The task running now (connect() or close(), in the owner's context) owns the connection.
#[inline(always)]
fn owned_by_current_task(l: &mut Life, from: u8) {
    l.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    crate::record::current_comm(l.comm.as_mut_ptr().cast());
    l.cgroup = unsafe { bpf_get_current_cgroup_id() };
    l.life.owner_from = from;
}

/// The connection is over: its entry is dead, for the next socket at its address to take.
#[inline(always)]
pub fn end(l: &mut Life) {
    l.alive = 0;
    l.ended_ns = unsafe { bpf_ktime_get_ns() };
}

/// The socket is freed (seen only with `all_states`): its entry goes.
#[inline(always)]
pub fn remove_life(sk: u64) {
    let _ = LIVES.remove(&sk);
}

/// Something happened to the connection at `sk` that makes its end of interest (a reset,
/// an error, a retransmission, a keepalive timer run): rare, so one lookup is cheap here.
#[inline(always)]
pub fn mark(sk: u64) {
    if let Some(l) = get(sk) {
        l.marks |= mark::TROUBLE;
    }
}

/// The connection `sk` goes `old` -> CLOSE: when its end is ordinary (see
/// `KernelConfig::all_ends`, which turns this off) it is counted and its entry ended here,
/// and true says nothing is to be sent. One lookup and no record: most connections end this way.
#[inline(always)]
pub fn ends_ordinarily(sk: Typed, old: u8, retransmits: u8) -> bool {
    let orderly =
        old == TCP_LAST_ACK || old == TCP_FIN_WAIT2 || old == TCP_FIN_WAIT1 || old == TCP_CLOSING;
    if !orderly || retransmits != 0 {
        return false;
    }
    let Some(l) = get(sk.addr()) else {
        // Its start was not seen (older than the trace, or no room): of interest.
        return false;
    };
    let started = l.life.established_ns;
    if l.marks != 0
        || started == 0
        || unsafe { bpf_ktime_get_ns() } - started >= config!(min_life_ns)
        || keepalive_on(sk)
        || sk.get(config!(offsets.sk_err)) != 0
    {
        return false;
    }
    end(l);
    crate::record::count(&ORDINARY_ENDS, 0);
    true
}

/// A zeroed entry in `slot`, zeroed a word at a time and in place (see [`crate::record::zero`]).
#[inline(always)]
fn empty(slot: &mut MaybeUninit<Life>) -> &mut Life {
    crate::record::zero(slot.as_mut_ptr());
    // SAFETY: all zeros is a valid Life.
    unsafe { slot.assume_init_mut() }
}

/// Puts the owner kept in `l` on the record `r`.
#[inline(always)]
pub fn name_owner(l: &Life, r: &mut keepalive_common::Record) {
    r.pid = l.pid;
    r.cgroup = l.cgroup;
    // Record::comm is 8-byte aligned (keepalive-common asserts it): word stores. Volatile,
    // or the compiler turns the pair back into a call to the shared memmove.
    let to = r.comm.as_mut_ptr() as *mut u64;
    unsafe {
        core::ptr::write_volatile(to, core::ptr::read_volatile(&l.comm[0]));
        core::ptr::write_volatile(to.add(1), core::ptr::read_volatile(&l.comm[1]));
    }
}

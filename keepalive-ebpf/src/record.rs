//! Records: built in place and queued on the EVENTS ring for user space, or counted lost.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use keepalive_common::Record;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Records that did not fit in EVENTS, by kind (the index); user space reports them.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(keepalive_common::LOST_SLOTS, 0);

/// Records submitted to EVENTS: user space checks it read every one of them.
#[map]
pub static EMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// bpf_ringbuf_query / bpf_ringbuf_submit flags (include/uapi/linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Queues `r` for user space.
pub fn submit<C: EbpfContext>(ctx: &C, r: &Record) {
    submit_with(ctx, r.kind, |p: *mut Record| unsafe { p.write(*r) });
}

/// Reserves a `T` in the ring, has `fill` write it in place and queues it, or counts a
/// record of `kind` lost when the ring is full.
#[inline(always)]
pub fn submit_with<C: EbpfContext, T: 'static>(ctx: &C, kind: u8, fill: impl FnOnce(*mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            fill(entry.as_mut_ptr());
            entry.submit(wakeup_flags(core::mem::size_of::<T>()));
            count(&EMITTED, 0);
        }
        None => lost(ctx, kind),
    }
}

/// Batch wake-ups: a wake-up is an interrupt (a self-IPI, a VM exit on virtual machines)
/// that costs more than the record. The reader drains on a short timer, so a quiet trickle
/// still arrives; it is woken early only when a record of `size` bytes takes the unread data
/// past a multiple of wakeup_bytes, which bounds wake-ups to one per wakeup_bytes even while
/// the reader lags (waking on every record past the threshold made a burst of probes cost
/// several times the record itself; README, Overhead). Two CPUs crossing at once may both
/// miss a band: the next band, or the timer, wakes the reader.
#[inline(always)]
pub fn wakeup_flags(size: usize) -> u64 {
    // A record's room in the ring: its 8-byte header and itself, rounded up to 8 bytes.
    let on_ring = ((size as u64 + 8) + 7) & !7;
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA);
    let band = config!(wakeup_bytes).max(1) as u64;
    if avail / band != avail.saturating_sub(on_ring) / band {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Counts a record of `kind` the ring had no room for.
pub fn lost<C: EbpfContext>(ctx: &C, kind: u8) {
    let lost = count(&LOST, (kind as u32) % keepalive_common::LOST_SLOTS);
    // A diagnostic for the tool's own operator, rare by construction.
    if lost.is_power_of_two() {
        warn!(
            ctx,
            "ring buffer full: {} records of kind {} lost on this CPU so far", lost, kind
        );
    }
}

/// Adds one to this CPU's counter `index` and returns the new value.
pub fn count(counter: &PerCpuArray<u64>, index: u32) -> u64 {
    let Some(c) = counter.get_ptr_mut(index) else {
        return 0;
    };
    // Atomic: a program in process context can be interrupted by one in softirq context on
    // the same CPU, and a plain increment would lose counts.
    // (The BPF target has no atomic types; the intrinsic lowers to BPF's atomic add.)
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            c, 1,
        );
        core::ptr::read_volatile(c)
    }
}

/// Zeroes a record (or any value of whole, aligned words) a word at a time. The BPF
/// backend turns zeroing a struct or an array into a call to the library memset, which
/// stores a byte per instruction: one per byte of a record, a good part of a state change's
/// cost. Volatile, or the stores become that call again.
#[inline(always)]
pub fn zero<T>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0 && core::mem::align_of::<T>() >= 8) };
    let words = p as *mut u64;
    for i in 0..core::mem::size_of::<T>() / 8 {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// The current task's command name, written by the helper straight into `to` (which it
/// fills whole, zeroes when it fails): no zeroed temporary and copy.
#[inline(always)]
pub fn current_comm(to: *mut [u8; 16]) {
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_comm(to.cast(), 16) };
}

/// Makes a new record of `kind` in `slot` (a program's stack) and returns it there: built in
/// place, since moving a zeroed value out becomes the byte-loop memset again.
#[inline(always)]
pub fn new_record(slot: &mut MaybeUninit<Record>, kind: u8) -> &mut Record {
    init_record(slot.as_mut_ptr(), kind);
    // SAFETY: init_record zeroed every byte and set two fields: a valid Record.
    unsafe { slot.assume_init_mut() }
}

/// Makes the record at `r` (a program's stack, or map memory: no copy of a record on the
/// stack) a new one of `kind`: zeroed a word at a time, its kind and time set.
#[inline(always)]
pub fn init_record(r: *mut Record, kind: u8) {
    zero(r);
    unsafe {
        (*r).kind = kind;
        (*r).ts_ns = bpf_ktime_get_ns();
    }
}

pub fn with_task(r: &mut Record) {
    r.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    current_comm(&mut r.comm);
    r.cgroup = unsafe { bpf_get_current_cgroup_id() };
}

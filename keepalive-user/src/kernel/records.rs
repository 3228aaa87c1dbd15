//! The kernel programs' records, read from their ring buffer and decoded into events: what
//! every command that traces (`trace`, `why`, `path`) shares.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Map, MapData, RingBuf},
};
use keepalive_common::names;
use tokio::io::unix::AsyncFd;

use crate::{
    decode::{Decoder, Parsed, parse_record},
    event::Event,
    host::cgroup::CgroupNames,
    kernel,
    kernel::hooks::AttachMode,
    kernel::loader::{self, LoadOptions},
    pipeline::Flow,
};

/// The programs loaded and attached, and their records as events.
pub struct KernelEvents {
    /// Holds the programs attached (dropping it detaches them) and the maps not taken.
    ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    decoder: Decoder,
    mode: AttachMode,
    hz: u32,
    /// Records read from the ring, to compare with what the kernel says it queued.
    received: u64,
}

impl KernelEvents {
    /// Loads and attaches the programs `opts` asks for and opens their ring buffer; events
    /// name their owners' workloads with `workloads`.
    pub fn open(opts: &LoadOptions, workloads: Option<&CgroupNames>) -> Result<Self> {
        let loader::Loaded {
            mut ebpf,
            types,
            mode,
        } = loader::load(opts)?;
        let hz = kernel::hz()?;
        let callers_name_resets = mode == AttachMode::Kprobe && !types.active_reset_has_reason();
        let mut decoder = Decoder::new(hz, kernel::monotonic_to_realtime_ns(), types.reset_reasons)
            .with_drop_reasons(types.drop_reasons);
        if callers_name_resets {
            decoder = decoder.with_reset_callers(kernel::reset_callers());
        }
        if let Some(w) = workloads {
            decoder = decoder.with_workloads(w.for_decoder());
        }
        let ring = RingBuf::try_from(ebpf.take_map(names::EVENTS).context("map EVENTS")?)?;
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd, so the fd stays
        // open for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
        Ok(KernelEvents {
            ebpf,
            ring,
            decoder,
            mode,
            hz,
            received: 0,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The kernel's timer frequency (keepalive timer runs are in its ticks).
    pub fn hz(&self) -> u32 {
        self.hz
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// One of the programs' other maps (counters), for the caller to read.
    pub fn take_map(&mut self, name: &str) -> Result<Map> {
        self.ebpf
            .take_map(name)
            .with_context(|| format!("map {name}"))
    }

    /// Runs of the programs the kernel skipped because another was running on the same CPU
    /// (a softirq's event nested in a process's; `recursion_misses` in each program's
    /// fdinfo): the events they would have reported are missing.
    pub fn skipped_runs(&self) -> u64 {
        use std::os::fd::{AsFd, AsRawFd};
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!(
                    "/proc/self/fdinfo/{}",
                    fd.as_fd().as_raw_fd()
                ))
                .ok()?;
                info.lines()
                    .find_map(|l| l.strip_prefix("recursion_misses:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Returns when the kernel has woken the reader: records piled up past its threshold.
    /// (It wakes only then, so callers also [`Self::drain`] on a timer.)
    pub async fn woken(&mut self) -> Result<()> {
        self.ring.readable_mut().await?.clear_ready();
        Ok(())
    }

    /// Decodes the records waiting, handing each event to `each` (with the decoder, which
    /// it may teach an owner, and the record it came from) until `each` says stop.
    pub fn drain(
        &mut self,
        each: impl FnMut(&mut Decoder, &Parsed, Event) -> Result<Flow>,
    ) -> Result<Flow> {
        let (flow, n) = drain_ring(self.ring.get_mut(), &mut self.decoder, each)?;
        self.received += n;
        Ok(flow)
    }
}

/// [`KernelEvents::drain`] for another ring of the same records (a `keepalive enforce`'s
/// stream); returns how far it got and how many records it read.
pub fn drain_ring(
    ring: &mut RingBuf<MapData>,
    decoder: &mut Decoder,
    mut each: impl FnMut(&mut Decoder, &Parsed, Event) -> Result<Flow>,
) -> Result<(Flow, u64)> {
    let mut read = 0;
    while let Some(item) = ring.next() {
        read += 1;
        let record = match parse_record(&item) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("skipping a malformed kernel record: {e}");
                continue;
            }
        };
        drop(item);
        for event in decoder.decode(&record) {
            if each(decoder, &record, event)? == Flow::Stop {
                return Ok((Flow::Stop, read));
            }
        }
    }
    Ok((Flow::Continue, read))
}

//! Events to output: filtering, diagnosis and printing, the same for live tracing and replay.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    sync::{Arc, Mutex},
};

use time::OffsetDateTime;

use crate::{
    diagnose::{ConnectionFilter, ConnectionTimeline, Engine},
    event::Event,
    output::history::HistoryWriter,
    output::metrics::Metrics,
    output::{Summary, Writer},
    verdict::Verdict,
};

/// What the kernel side counted in a run, for the summary.
#[derive(Debug, Default)]
pub struct KernelCounts {
    /// Records lost for want of room, in all and by kind.
    pub lost: u64,
    pub lost_by_kind: BTreeMap<String, u64>,
    /// Records queued that were never read.
    pub unread: u64,
    /// Connection ends judged ordinary: counted, not sent.
    pub ordinary_ends: u64,
    /// Program runs the kernel skipped (nested on one CPU).
    pub skipped_runs: u64,
}

/// What the pipeline prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Every matching event as it happens, and every matching verdict (`keepalive trace`).
    Trace,
    /// Only verdicts (`keepalive trace --quiet`).
    Verdicts,
    /// Only the first matching connection to end: its timeline and verdict (`keepalive why`).
    Why,
}

/// Whether to go on reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Done (`why` answered) or nobody reads our output any more.
    Stop,
}

pub struct Pipeline {
    show: Show,
    /// Event kinds to print (all when empty); trace mode only.
    kinds: Vec<String>,
    connections: ConnectionFilter,
    engine: Engine,
    summary: Summary,
    /// `why` printed its connection.
    answered: bool,
    /// Counters for `--metrics`, fed every event and verdict whatever is printed.
    metrics: Option<Arc<Mutex<Metrics>>>,
    /// The store of `--history`, given every verdict the filters let through.
    history: Option<HistoryWriter>,
    out: Writer,
}

impl Pipeline {
    pub fn new(show: Show, kinds: Vec<String>, connections: ConnectionFilter, out: Writer) -> Self {
        Pipeline {
            show,
            kinds,
            connections,
            // Only `why` prints timelines.
            engine: match show {
                Show::Why => Engine::default(),
                Show::Trace | Show::Verdicts => Engine::default().without_timelines(),
            },
            summary: Summary::default(),
            answered: false,
            metrics: None,
            history: None,
            out,
        }
    }

    /// Keeps verdicts, and the timelines of connections that did not close normally, in
    /// `history` (call before the first event: timelines are kept from then on).
    pub fn with_history(mut self, history: HistoryWriter) -> Self {
        self.engine = Engine::default();
        self.history = Some(history);
        self
    }

    /// Feeds `metrics` every event and verdict, whatever is printed.
    pub fn with_metrics(mut self, metrics: Arc<Mutex<Metrics>>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The counts so far (the summary printed at the end).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Connections have closed whose verdicts are still to come out (see [`Self::tick`]).
    pub fn settling(&self) -> bool {
        self.engine.settling()
    }

    /// Whether `why` has printed the connection it was asked about.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// What the kernel side counted: records lost for want of room (in all and by kind) and
    /// records queued that were never read.
    pub fn kernel_counts(&mut self, counts: KernelCounts) {
        self.summary.lost = counts.lost;
        self.summary.lost_by_kind = counts.lost_by_kind;
        self.summary.unread = counts.unread;
        self.summary.ordinary_ends = counts.ordinary_ends;
        self.summary.skipped_runs = counts.skipped_runs;
        if let Some(m) = &self.metrics {
            m.lock().unwrap().set_ordinary_ends(counts.ordinary_ends);
        }
    }

    /// Updates the metrics' gauges and the kernel's running totals (`totals` is asked for
    /// only when metrics are served): records lost, ordinary ends.
    pub fn update_gauges(&mut self, totals: impl FnOnce() -> (u64, u64)) {
        if let Some(m) = &self.metrics {
            let (lost, ordinary_ends) = totals();
            let mut m = m.lock().unwrap();
            m.set_lost(lost);
            m.set_ordinary_ends(ordinary_ends);
            m.set_tracked(self.engine.tracked());
        }
    }

    /// Gives back memory the engine's tables no longer need.
    pub fn shrink(&mut self) {
        self.engine.shrink();
    }

    /// Says in the history that tracing stopped.
    pub fn stop_history(&mut self) -> anyhow::Result<()> {
        match self.history.take() {
            Some(h) => h.stop(OffsetDateTime::now_utc()),
            None => Ok(()),
        }
    }

    pub fn event(&mut self, e: &Event) -> std::io::Result<Flow> {
        self.summary.events += 1;
        if let Some(m) = &self.metrics {
            m.lock().unwrap().event(e);
        }
        let ended = self.engine.observe(e);
        if self.show == Show::Trace
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == e.detail.kind()))
            && self
                .connections
                .matches(&e.socket, e.pid, e.comm.as_deref(), e.workload.as_deref())
        {
            // Looked up before inserting: a String key per event would be an allocation.
            let kind = e.detail.kind();
            match self.summary.by_kind.get_mut(kind) {
                Some(n) => *n += 1,
                None => {
                    self.summary.by_kind.insert(kind.to_string(), 1);
                }
            }
            if let Flow::Stop = guard(self.out.event(e))? {
                return Ok(Flow::Stop);
            }
        }
        self.verdicts(ended)
    }

    /// Lets verdicts of connections closed a moment ago out (call it periodically).
    pub fn tick(&mut self, now: OffsetDateTime) -> std::io::Result<Flow> {
        if let Some(h) = &mut self.history {
            h.tick(now).map_err(std::io::Error::other)?;
        }
        let ended = self.engine.settle(now);
        self.verdicts(ended)
    }

    /// End of input: verdicts for everything that has closed.
    pub fn finish(&mut self) -> std::io::Result<Flow> {
        let ended = self.engine.finish();
        self.verdicts(ended)
    }

    /// Writes out buffered output: after each batch of events, so lines appear promptly
    /// without a system call per line.
    pub fn flush(&mut self) -> std::io::Result<Flow> {
        guard(self.out.flush())
    }

    pub fn write_summary(&mut self) -> std::io::Result<()> {
        self.summary.evicted = self.engine.evicted();
        guard(self.out.summary(&self.summary)).map(|_| ())
    }

    fn verdicts(&mut self, ended: Vec<(Verdict, ConnectionTimeline)>) -> std::io::Result<Flow> {
        for (v, timeline) in ended {
            if let Some(m) = &self.metrics {
                m.lock().unwrap().verdict(&v);
            }
            if !self
                .connections
                .matches(&v.socket, v.pid, v.comm.as_deref(), v.workload.as_deref())
            {
                continue;
            }
            self.summary.count_verdict(&v);
            if let Some(h) = &mut self.history {
                h.end(&v, &timeline).map_err(std::io::Error::other)?;
            }
            let flow = match self.show {
                Show::Trace | Show::Verdicts => guard(self.out.verdict(&v, None))?,
                Show::Why => {
                    self.answered = true;
                    guard(self.out.verdict(&v, Some(&timeline)))?;
                    guard(self.out.flush())?;
                    Flow::Stop
                }
            };
            if flow == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }
}

/// A closed pipe (`keepalive trace | head -1`) ends the run quietly.
fn guard(r: std::io::Result<()>) -> std::io::Result<Flow> {
    match r {
        Ok(()) => Ok(Flow::Continue),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Flow::Stop),
        Err(e) => Err(e),
    }
}

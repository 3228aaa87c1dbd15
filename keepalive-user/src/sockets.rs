//! `keepalive sockets`: the TCP connections that exist now, with their keepalive settings,
//! timer and probes, and the process that owns each (sock_diag + /proc + getsockopt).

use std::{io::Write, sync::Arc};

use anyhow::Result;
use serde::Serialize;

use crate::{
    diagnose::ConnectionFilter,
    event::TcpState,
    output::Format,
    procs::{ProcessTable, SocketOptions},
    snapshot::SocketEntry,
    workload::{Workload, Workloads},
};

#[derive(Debug, Serialize)]
pub struct SocketRow {
    #[serde(flatten)]
    pub entry: SocketEntry,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The owner's cgroup, unit, container and pod, when known.
    #[serde(flatten, with = "keepalive_events::workload::flat")]
    pub workload: Option<Arc<Workload>>,
    /// Keepalive options read from the socket itself; absent when no process holds it.
    pub keepalive: Option<SocketOptions>,
}

/// Joins sockets with their owners and options, keeping those the filter and `all` select.
pub fn rows(
    entries: Vec<SocketEntry>,
    filter: &ConnectionFilter,
    workloads: &Workloads,
    all: bool,
) -> Vec<SocketRow> {
    let mut procs = ProcessTable::default();
    let mut rows: Vec<SocketRow> = entries
        .into_iter()
        .filter(|e| all || is_connection(e.state))
        .filter_map(|entry| {
            let owner = procs.lookup(entry.inode as u64);
            let (pid, comm) = match owner {
                Some((p, c)) => (Some(p), Some(c.to_string())),
                None => (None, None),
            };
            let workload = pid.and_then(|p| workloads.of_pid(p));
            if !filter.matches(&entry.socket, pid, comm.as_deref(), workload.as_deref()) {
                return None;
            }
            let keepalive = procs.keepalive_settings(entry.inode as u64);
            Some(SocketRow {
                entry,
                pid,
                comm,
                workload,
                keepalive,
            })
        })
        .collect();
    rows.sort_by_key(|r| (r.entry.socket.sport, r.entry.socket.dport));
    rows
}

fn is_connection(s: TcpState) -> bool {
    !matches!(
        s,
        TcpState::Listen | TcpState::TimeWait | TcpState::Close | TcpState::NewSynRecv
    )
}

pub fn print(rows: &[SocketRow], format: Format, out: &mut dyn Write) -> Result<()> {
    if format == Format::Json {
        for r in rows {
            serde_json::to_writer(&mut *out, r)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<47} {:<11} {:<9} {:<18} {:<6} {:<20} OWNER",
        "LOCAL -> REMOTE", "STATE", "KEEPALIVE", "IDLE/INTVL/CNT", "PROBES", "TIMER"
    )?;
    for r in rows {
        let (ka, settings) = match &r.keepalive {
            Some(k) => (
                if k.enabled { "on" } else { "off" }.to_string(),
                format!(
                    "{}s/{}s/{}{}",
                    k.idle_s,
                    k.interval_s,
                    k.count,
                    if k.user_timeout_ms > 0 {
                        format!(" ut={}ms", k.user_timeout_ms)
                    } else {
                        String::new()
                    }
                ),
            ),
            None => ("?".into(), "-".into()),
        };
        let timer = match (&r.entry.timer, r.entry.timer_s) {
            (Some(t), Some(s)) => format!("{t} {s}s"),
            (Some(t), None) => t.clone(),
            _ => "-".into(),
        };
        let label = r.workload.as_ref().and_then(|w| w.label());
        let owner = match (&r.comm, r.pid, label) {
            (Some(c), Some(p), Some(l)) => format!("{c} {p} ({l})"),
            (Some(c), Some(p), None) => format!("{c} {p}"),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:<47} {:<11} {:<9} {:<18} {:<6} {:<20} {}",
            r.entry.socket.endpoints(),
            r.entry.state.to_string(),
            ka,
            settings,
            r.entry.probes,
            timer,
            owner
        )?;
    }
    Ok(())
}

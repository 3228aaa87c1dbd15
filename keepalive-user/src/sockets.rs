//! `keepalive sockets`: the TCP connections that exist now, with their keepalive settings,
//! timer and probes, and the process that owns each (sock_diag + /proc + getsockopt).

use std::{io::Write, sync::Arc};

use anyhow::Result;
use serde::Serialize;

use crate::{
    diagnose::ConnectionFilter,
    event::TcpState,
    host::cgroup::CgroupNames,
    host::procs::{ProcessTable, SocketOptions},
    host::snapshot::SocketEntry,
    output::Format,
    path_plan::Settings,
    workload::Workload,
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
    /// With an idle limit: why the limit would kill it when idle, and the fix; absent when
    /// it would not (or no limit was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_risk: Option<AtRisk>,
}

/// Why an idle limit on the path would kill a connection once it idles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Keepalive is off: nothing refreshes the path's state while it idles.
    KeepaliveOff,
    /// Its first probe comes after the limit (the idle time, and the kernel's timer fires up
    /// to an eighth late).
    FirstProbeTooLate,
}

/// A connection an idle limit would kill, and what to set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtRisk {
    pub why: Risk,
    pub limit_s: u32,
    /// The idle time the one rule recommends under the limit, and the settings for it.
    pub recommended_idle_s: u32,
    pub fix: Settings,
}

/// Whether a connection with keepalive `k` dies idle on a path that forgets after `limit_s`.
pub fn risk(k: &SocketOptions, limit_s: u32) -> Option<Risk> {
    if !k.enabled {
        Some(Risk::KeepaliveOff)
    } else if keepalive_events::idle_limit::first_probe_by(k.idle_s) >= f64::from(limit_s) {
        Some(Risk::FirstProbeTooLate)
    } else {
        None
    }
}

/// The idle time to set under a known limit: the one rule, with the limit's second before it
/// as what is kept.
pub fn recommended_under(limit_s: u32) -> u32 {
    crate::path_plan::recommended_idle(limit_s.saturating_sub(1).max(1), limit_s)
}

/// Joins sockets with their owners and options, keeping those the filter and `all` select;
/// with `idle_limit_s`, marks the established connections it would kill.
pub fn rows(
    entries: Vec<SocketEntry>,
    filter: &ConnectionFilter,
    workloads: &CgroupNames,
    all: bool,
    idle_limit_s: Option<u32>,
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
            let at_risk = match (idle_limit_s, &keepalive) {
                (Some(limit_s), Some(k)) if entry.state == TcpState::Established => {
                    risk(k, limit_s).map(|why| {
                        let idle = recommended_under(limit_s);
                        let cgroup = workload.as_ref().map(|w| w.cgroup.as_str());
                        AtRisk {
                            why,
                            limit_s,
                            recommended_idle_s: idle,
                            fix: Settings::for_idle_in(idle, entry.socket.dport, cgroup),
                        }
                    })
                }
                _ => None,
            };
            Some(SocketRow {
                entry,
                pid,
                comm,
                workload,
                keepalive,
                at_risk,
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
    print_at_risk(rows, out)
}

/// The connections an idle limit would kill, grouped by owner (process and workload), each
/// group with its fix.
fn print_at_risk(rows: &[SocketRow], out: &mut dyn Write) -> Result<()> {
    let at_risk: Vec<&SocketRow> = rows.iter().filter(|r| r.at_risk.is_some()).collect();
    let Some(limit) = at_risk.first().and_then(|r| r.at_risk.as_ref()) else {
        return Ok(());
    };
    writeln!(
        out,
        "\nAt risk under a {} s idle limit: {} of {} connections (idle longer than that, \
         they are forgotten)",
        limit.limit_s,
        at_risk.len(),
        rows.iter()
            .filter(|r| r.entry.state == TcpState::Established)
            .count()
    )?;
    let mut groups: Vec<(String, Vec<&SocketRow>)> = vec![];
    for r in at_risk {
        let owner = owner(r);
        match groups.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, g)) => g.push(r),
            None => groups.push((owner, vec![r])),
        }
    }
    for (owner, group) in groups {
        writeln!(out, "  {owner}: {} connection(s)", group.len())?;
        for r in &group {
            let risk = r.at_risk.as_ref().unwrap();
            let why = match (risk.why, &r.keepalive) {
                (Risk::FirstProbeTooLate, Some(k)) => {
                    format!("first probe after {} s idle", k.idle_s)
                }
                _ => "keepalive off".to_string(),
            };
            let idle = r
                .entry
                .idle_ms
                .map(|ms| format!(", idle {:.1} s now", ms as f64 / 1000.0))
                .unwrap_or_default();
            writeln!(out, "    {}  {why}{idle}", r.entry.socket.endpoints())?;
        }
        let risk = group[0].at_risk.as_ref().unwrap();
        let f = &risk.fix;
        writeln!(
            out,
            "    fix (idle {} s):\n      per socket:  {}\n      host-wide:   {}\n      ssh:         {}\n      no code change: {}",
            risk.recommended_idle_s, f.setsockopt, f.sysctl, f.ssh, f.enforce
        )?;
    }
    Ok(())
}

fn owner(r: &SocketRow) -> String {
    let label = r.workload.as_ref().and_then(|w| w.label());
    match (&r.comm, r.pid, label) {
        (Some(c), Some(p), Some(l)) => format!("{c} {p} ({l})"),
        (Some(c), Some(p), None) => format!("{c} {p}"),
        _ => "no process holds them".into(),
    }
}

//! `cargo xtask bench`: what tracing costs, measured. Each workload runs without a tracer,
//! under `keepalive trace`, and under an equivalent bpftrace script, in alternating rounds;
//! ratios are medians against the baseline of the same run. Traffic stays in namespaces the
//! bench creates; every loop is bounded in time.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use keepalive_tests::{Link, keepalive, tracer::binary};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    Baseline,
    Keepalive,
    /// keepalive with `--all`: every connection's end a record and a verdict, as before
    /// ordinary ends were only counted (churn only: elsewhere it changes nothing).
    KeepaliveAll,
    /// bpftrace on the same hooks with the same filters, one printf per record.
    Bpftrace,
    /// The same script counting into maps instead: the floor of what a kernel side on
    /// these hooks can cost.
    BpftraceCount,
}

impl Config {
    fn is_keepalive(self) -> bool {
        matches!(self, Config::Keepalive | Config::KeepaliveAll)
    }

    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Keepalive => "keepalive",
            Config::KeepaliveAll => "keepalive_all",
            Config::Bpftrace => "bpftrace",
            Config::BpftraceCount => "bpftrace_count",
        }
    }
}

/// A workload: runs for about `secs` seconds (with `n` connections where that applies),
/// marks its timed part in the window, returns operations per second.
type Workload = fn(&Link, f64, usize, &Window) -> f64;

/// The timed part of a workload, with the tracer's count of records queued and its CPU
/// seconds at its start and end: figures that took in setup (thousands of connections for
/// the storm) would be wrong.
#[derive(Default)]
struct Window {
    counter: Option<Box<dyn Fn() -> Counts>>,
    start: std::cell::RefCell<Option<(Instant, Counts)>>,
    end: std::cell::RefCell<Option<(Instant, Counts)>>,
    /// The whole machine's busy CPU seconds at open and close, with or without a tracer.
    host: std::cell::RefCell<Option<((Instant, f64), (Instant, f64))>>,
}

/// A tracer's running totals: records queued and lost by its kernel side, its CPU seconds,
/// and its kernel programs' run time and runs (bpf_stats) by program name.
#[derive(Clone, Default)]
struct Counts {
    queued: u64,
    lost: u64,
    cpu_s: f64,
    programs: BTreeMap<String, (u64, u64)>,
}

/// What a tracer's kernel programs cost in the timed part.
#[derive(Clone, Default, Debug)]
struct KernelCost {
    /// BPF nanoseconds per second of all its programs: CPU the host pays, no process shows.
    ns_per_s: f64,
    /// Per program: ns per run and runs per second.
    programs: BTreeMap<String, (f64, f64)>,
}

impl Window {
    fn open(&self) {
        let now = (Instant::now(), host_busy_seconds());
        *self.host.borrow_mut() = Some((now, now));
        if let Some(c) = &self.counter {
            let n = c();
            *self.start.borrow_mut() = Some((Instant::now(), n));
        }
    }

    fn close(&self) {
        if let Some(c) = &self.counter {
            *self.end.borrow_mut() = Some((Instant::now(), c()));
        }
        if let Some((_, end)) = &mut *self.host.borrow_mut() {
            *end = (Instant::now(), host_busy_seconds());
        }
    }

    /// The whole machine's busy CPU in the timed part, in seconds per second.
    fn host_busy_per_s(&self) -> f64 {
        match *self.host.borrow() {
            Some(((t0, a), (t1, b))) if t1 > t0 => (b - a) / (t1 - t0).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Records queued per second, records lost, the tracer's CPU as a percentage of one
    /// core, and its kernel programs' cost, all in the timed part.
    fn rates(&self) -> (f64, u64, f64, KernelCost) {
        match (&*self.start.borrow(), &*self.end.borrow()) {
            (Some((t0, a)), Some((t1, b))) => {
                let secs = (*t1 - *t0).as_secs_f64();
                let mut cost = KernelCost::default();
                for (name, &(ns1, runs1)) in &b.programs {
                    let (ns0, runs0) = a.programs.get(name).copied().unwrap_or((0, 0));
                    let (ns, runs) = (ns1.saturating_sub(ns0), runs1.saturating_sub(runs0));
                    cost.ns_per_s += ns as f64 / secs;
                    if runs > 0 {
                        cost.programs
                            .insert(name.clone(), (ns as f64 / runs as f64, runs as f64 / secs));
                    }
                }
                (
                    b.queued.saturating_sub(a.queued) as f64 / secs,
                    b.lost.saturating_sub(a.lost),
                    (b.cpu_s - a.cpu_s) / secs * 100.0,
                    cost,
                )
            }
            _ => (0.0, 0, 0.0, KernelCost::default()),
        }
    }
}

/// One measurement.
#[derive(Default, Clone, Debug)]
struct Sample {
    ops_per_s: f64,
    /// The tracer's CPU in the timed part, % of one core.
    tracer_cpu_percent: f64,
    tracer_peak_rss_kib: u64,
    /// Resident memory at the end of the run: what the tracer holds for the workload
    /// (the peak includes parsing the kernel's BTF at start).
    tracer_rss_kib: u64,
    events: u64,
    /// Records the kernel queued per second in the timed part (keepalive only).
    events_per_s: f64,
    /// Records lost over the whole run, setup and teardown included, and in the timed part.
    lost: u64,
    lost_in_window: u64,
    /// Kernel-side cost in the timed part (bpf_stats).
    kernel: KernelCost,
    /// The whole machine's busy CPU per operation in the timed part, in microseconds: what
    /// the host pays for each operation, the workload, the tracer and its programs together
    /// (steadier than throughput when the workload waits on wake-ups rather than CPU).
    host_us_per_op: f64,
}

struct Settings {
    seconds: f64,
    rounds: usize,
    storm_connections: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--storm-worker") {
        return storm_worker(&args[2..]);
    }
    // `keepalive-bench --record-path [SOCKETS]`: only the tracer's per-record cost (quick to
    // repeat, and deterministic enough for `valgrind --tool=callgrind`).
    if args.get(1).map(String::as_str) == Some("--record-path") {
        let sockets = args
            .get(2)
            .map_or(10_000, |n| n.parse().expect("SOCKETS: a number"));
        println!("{}", record_path(sockets));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // --workload NAME (repeatable) and --rounds N, as `cargo xtask bench` passes them.
    let value_of = |flag: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    };
    let only = value_of("--workload");
    let rounds: Option<usize> = value_of("--rounds").last().map(|r| {
        r.parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("--rounds {r}: not a positive number"))
    });
    assert!(nix::unistd::geteuid().is_root(), "the benchmark needs root");
    raise_fd_limit();
    let s = if quick {
        Settings {
            seconds: 1.5,
            rounds: 3,
            storm_connections: 2000,
        }
    } else {
        Settings {
            seconds: 5.0,
            rounds: 5,
            storm_connections: 50000,
        }
    };
    let storm_connections: Option<usize> = value_of("--storm-connections").last().map(|n| {
        n.parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("--storm-connections {n}: not a positive number"))
    });
    let s = Settings {
        rounds: rounds.unwrap_or(s.rounds),
        storm_connections: storm_connections.unwrap_or(s.storm_connections),
        ..s
    };
    let have_bpftrace = Command::new("bpftrace").arg("--version").output().is_ok();
    if !have_bpftrace {
        eprintln!("bench: bpftrace not found; its column stays empty (apt-get install bpftrace)");
    }
    let _stats = BpfStats::enable();
    let mut results = json!({ "quick": quick, "workloads": {} });
    let workloads: [(&str, &str, Workload); 5] = [
        ("churn", "connections/s", churn),
        ("bulk", "MB/s", bulk),
        ("keepalive_storm", "probes/s", storm),
        ("timers", "timer expiries/s", timers),
        ("drops", "drops/s", drops),
    ];
    println!(
        "{:<16} {:<17} {:>12} {:>12} {:>12} {:>8} {:>8} {:>10} {:>8} {:>9} {:>8}",
        "workload",
        "unit",
        "baseline",
        "keepalive",
        "bpftrace",
        "ka/base",
        "bt/base",
        "events/s",
        "lost",
        "cpu %",
        "rss MiB"
    );
    for w in &only {
        assert!(
            workloads.iter().any(|(name, _, _)| name == w),
            "--workload {w}: not one of churn, bulk, keepalive_storm, timers, drops"
        );
    }
    let workloads: Vec<_> = workloads
        .into_iter()
        .filter(|(name, _, _)| only.is_empty() || only.iter().any(|w| w == name))
        .collect();
    for &(name, unit, run) in &workloads {
        let link = Link::new("bench-c", "bench-s", false);
        // Churn must measure connections, not the wait for ports held in TIME_WAIT.
        link.a.sysctl("net.ipv4.tcp_tw_reuse", "1");
        link.a.sysctl("net.ipv4.ip_local_port_range", "1024 65000");
        let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
        let mut configs = vec![Config::Baseline, Config::Keepalive];
        if have_bpftrace {
            configs.extend([Config::Bpftrace, Config::BpftraceCount]);
        }
        if name == "churn" {
            configs.push(Config::KeepaliveAll);
        }
        for round in 0..s.rounds {
            // Alternate the order so drift in the machine does not favour one config.
            let mut order = configs.clone();
            order.rotate_left(round % configs.len());
            for config in order {
                let sample = measure(config, &link, &s, run);
                // Every sample, so the spread behind each median can be seen.
                eprintln!(
                    "  {name} round {} {}: {:.1} {unit}, {:.2} us host CPU each, {} lost",
                    round + 1,
                    config.name(),
                    sample.ops_per_s,
                    sample.host_us_per_op,
                    sample.lost_in_window
                );
                samples.entry(config.name()).or_default().push(sample);
            }
        }
        let med = |c: &str, f: &dyn Fn(&Sample) -> f64| -> Option<f64> {
            samples.get(c).map(|v| median(v.iter().map(f).collect()))
        };
        let base = med("baseline", &|x| x.ops_per_s).unwrap();
        let ka = med("keepalive", &|x| x.ops_per_s).unwrap();
        let bt = med("bpftrace", &|x| x.ops_per_s);
        let ka_samples = &samples["keepalive"];
        let events_per_s = median(ka_samples.iter().map(|x| x.events_per_s).collect());
        let lost: u64 = ka_samples.iter().map(|x| x.lost_in_window).sum();
        let lost_whole_run: u64 = ka_samples.iter().map(|x| x.lost).sum();
        let cpu_pct = median(ka_samples.iter().map(|x| x.tracer_cpu_percent).collect());
        let host_us_per_op: BTreeMap<&str, f64> = samples
            .iter()
            .map(|(c, v)| (*c, median(v.iter().map(|x| x.host_us_per_op).collect())))
            .collect();
        let peak_rss = ka_samples
            .iter()
            .map(|x| x.tracer_peak_rss_kib)
            .max()
            .unwrap_or(0);
        let rss = ka_samples
            .iter()
            .map(|x| x.tracer_rss_kib)
            .max()
            .unwrap_or(0);
        let kernel: BTreeMap<&str, Value> = samples
            .iter()
            .filter(|(c, _)| **c != "baseline")
            .map(|(c, v)| (*c, kernel_cost(v)))
            .collect();
        println!(
            "{:<16} {:<17} {:>12.1} {:>12.1} {:>12} {:>8.3} {:>8} {:>10.0} {:>8} {:>9.2} {:>8.1}",
            name,
            unit,
            base,
            ka,
            bt.map(|b| format!("{b:.1}")).unwrap_or("-".into()),
            ka / base,
            bt.map(|b| format!("{:.3}", b / base)).unwrap_or("-".into()),
            events_per_s,
            lost,
            cpu_pct,
            rss as f64 / 1024.0
        );
        if lost_whole_run > lost {
            println!(
                "{:<16} {lost_whole_run} records lost over whole runs (setup and teardown \
                 included; `lost` is the timed part)",
                ""
            );
        }
        results["workloads"][name] = json!({
            "unit": unit,
            "baseline": base,
            "keepalive": ka,
            "bpftrace": bt,
            "keepalive_all": med("keepalive_all", &|x| x.ops_per_s),
            "ratio_keepalive": ka / base,
            "ratio_bpftrace": bt.map(|b| b / base),
            "keepalive_events_per_s": events_per_s,
            "keepalive_lost": lost,
            "keepalive_lost_whole_run": lost_whole_run,
            "keepalive_cpu_percent": cpu_pct,
            "keepalive_rss_kib": rss,
            "keepalive_peak_rss_kib": peak_rss,
            "kernel": kernel,
            "host_us_per_op": host_us_per_op,
            "rounds": s.rounds,
            "seconds": s.seconds,
        });
    }
    let scale = engine_scale(if quick { 20_000 } else { 100_000 });
    for (config, what) in [("trace", "trace"), ("why", "why, with timelines")] {
        let e = &scale[config];
        println!(
            "engine ({what}): {} tracked connections, {:.0} heap bytes/connection ({:.1} MB), \
             {:.0} events/s on one core",
            scale["connections"],
            e["bytes_per_connection"].as_f64().unwrap(),
            e["megabytes"].as_f64().unwrap(),
            e["events_per_s"].as_f64().unwrap()
        );
    }
    results["engine"] = scale;
    let per_record = record_path(if quick { 2_000 } else { 10_000 });
    println!(
        "tracer per record (trace --format json, storm-like records of {} sockets): {:.0} ns \
         (parse, decode, correlate, JSON lines), {:.0} ns per event, {:.0} records/s on one core",
        per_record["sockets"],
        per_record["ns_per_record"].as_f64().unwrap(),
        per_record["ns_per_event"].as_f64().unwrap(),
        1e9 / per_record["ns_per_record"].as_f64().unwrap()
    );
    results["record_path"] = per_record;
    println!("storm connections: {}", s.storm_connections);
    results["storm_connections"] = json!(s.storm_connections);
    println!(
        "\nkernel programs in the timed part (bpf_stats; medians over rounds): BPF ns per \
         operation, the tracer's whole CPU (its process plus its programs) in % of a core, \
         and per program ns per run x runs per operation"
    );
    for (name, unit, _) in &workloads {
        let op = unit.trim_end_matches("/s");
        for (config, k) in results["workloads"][name]["kernel"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let programs: Vec<String> = k["programs"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, p)| p["runs_per_op"].as_f64().unwrap_or(0.0) > 0.0005)
                .map(|(p, v)| {
                    format!(
                        "{p} {:.0}x{:.3}",
                        v["ns_per_run"].as_f64().unwrap_or(0.0),
                        v["runs_per_op"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!(
                "  {name:<16} {config:<15} {:>9.0} ns/{op:<16} cpu {:>6.2} %  with process {:>8.0} ns  {}",
                k["ns_per_op"].as_f64().unwrap_or(0.0),
                k["total_cpu_percent"].as_f64().unwrap_or(0.0),
                k["total_ns_per_op"].as_f64().unwrap_or(0.0),
                programs.join(", ")
            );
        }
        if *name == "drops" {
            // The one program a drop runs: keepalive's against bpftrace counting it.
            let per_run = |config: &str| {
                let programs = &results["workloads"][name]["kernel"][config]["programs"];
                programs
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(p, _)| p.contains("kfree_skb"))
                    .and_then(|(_, v)| v["ns_per_run"].as_f64())
            };
            if let (Some(ka), Some(count)) = (per_run("keepalive"), per_run("bpftrace_count")) {
                println!(
                    "  {name:<16} kfree_skb per drop: keepalive {ka:.0} ns, bpftrace counting \
                     {count:.0} ns, {:.2}x",
                    ka / count
                );
                results["workloads"][name]["kfree_skb_ratio"] = json!(ka / count);
            }
        }
        let total =
            |config: &str| results["workloads"][name]["kernel"][config]["total_ns_per_op"].as_f64();
        if let (Some(ka), Some(count)) = (total("keepalive"), total("bpftrace_count")) {
            println!(
                "  {name:<16} keepalive's BPF + process per {op}: {ka:.0} ns, {:.2}x bpftrace counting's {count:.0}",
                ka / count
            );
        }
    }
    println!(
        "\nwhat the host pays per operation (the whole machine's busy CPU in the timed part \
         over operations; medians): microseconds, and the tracer's share above the baseline"
    );
    for (name, unit, _) in &workloads {
        let op = unit.trim_end_matches("/s");
        let per_op = &results["workloads"][name]["host_us_per_op"];
        let Some(base) = per_op["baseline"].as_f64() else {
            continue;
        };
        let others: Vec<String> = per_op
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(c, _)| *c != "baseline")
            .filter_map(|(c, v)| v.as_f64().map(|v| (c, v)))
            .map(|(c, v)| format!("{c} {v:.2} ({:+.1} %)", (v / base - 1.0) * 100.0))
            .collect();
        println!(
            "  {name:<16} per {op:<16} baseline {base:.2}, {}",
            others.join(", ")
        );
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    println!("results: {}", path.display());
}

/// A tracer's kernel-side cost over its rounds: BPF ns per operation of the workload, its
/// whole CPU (process and programs) in % of one core, and per program ns per run and runs
/// per operation; medians.
fn kernel_cost(samples: &[Sample]) -> Value {
    let per_op = |x: &Sample, v: f64| {
        if x.ops_per_s > 0.0 {
            v / x.ops_per_s
        } else {
            0.0
        }
    };
    let mut names: Vec<&String> = samples
        .iter()
        .flat_map(|x| x.kernel.programs.keys())
        .collect();
    names.sort();
    names.dedup();
    let programs: serde_json::Map<String, Value> = names
        .into_iter()
        .map(|p| {
            let ns = median(
                samples
                    .iter()
                    .filter_map(|x| x.kernel.programs.get(p).map(|v| v.0))
                    .collect(),
            );
            let runs = median(
                samples
                    .iter()
                    .map(|x| per_op(x, x.kernel.programs.get(p).map_or(0.0, |v| v.1)))
                    .collect(),
            );
            (p.clone(), json!({ "ns_per_run": ns, "runs_per_op": runs }))
        })
        .collect();
    json!({
        "ns_per_op": median(samples.iter().map(|x| per_op(x, x.kernel.ns_per_s)).collect()),
        "bpf_cpu_percent": median(samples.iter().map(|x| x.kernel.ns_per_s / 1e7).collect()),
        // BPF and the tracer's process together, per operation: what issue 28's target
        // compares (a counting script's process costs next to nothing).
        "total_ns_per_op": median(
            samples
                .iter()
                .map(|x| per_op(x, x.tracer_cpu_percent * 1e7 + x.kernel.ns_per_s))
                .collect()
        ),
        "total_cpu_percent": median(
            samples
                .iter()
                .map(|x| x.tracer_cpu_percent + x.kernel.ns_per_s / 1e7)
                .collect()
        ),
        "programs": programs,
    })
}

fn measure(config: Config, link: &Link, s: &Settings, run: Workload) -> Sample {
    let tracer = match config {
        Config::Baseline => None,
        Config::Keepalive => Some(start_keepalive(&[])),
        Config::KeepaliveAll => Some(start_keepalive(&["--all"])),
        Config::Bpftrace => Some(start_bpftrace(true)),
        Config::BpftraceCount => Some(start_bpftrace(false)),
    };
    let mut window = Window::default();
    if let Some(t) = &tracer {
        let pid = t.child.id();
        let (emitted, lost) = if config.is_keepalive() {
            (map_id(pid, "EMITTED"), map_id(pid, "LOST"))
        } else {
            (None, None)
        };
        let names = program_names(pid);
        window.counter = Some(Box::new(move || Counts {
            queued: emitted.as_deref().map(counter_sum).unwrap_or(0),
            lost: lost.as_deref().map(counter_sum).unwrap_or(0),
            cpu_s: cpu_seconds(pid),
            programs: program_stats(pid, &names),
        }));
    }
    let ops = run(link, s.seconds, s.storm_connections, &window);
    let (events_per_s, lost_in_window, tracer_cpu_percent, kernel) = window.rates();
    let mut sample = Sample {
        ops_per_s: ops,
        host_us_per_op: if ops > 0.0 {
            window.host_busy_per_s() / ops * 1e6
        } else {
            0.0
        },
        events_per_s,
        lost_in_window,
        tracer_cpu_percent,
        kernel,
        ..Default::default()
    };
    if let Some(Running {
        child,
        stderr,
        reader,
    }) = tracer
    {
        let pid = child.id();
        sample.tracer_peak_rss_kib = status_kib(pid, "VmHWM:");
        sample.tracer_rss_kib = status_kib(pid, "VmRSS:");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        // bpftrace flushes its backlog before exiting; past a minute it is killed (its
        // figures do not depend on a clean exit).
        let (_, killed) = keepalive_tests::tracer::wait_bounded(child, Duration::from_secs(60));
        assert!(
            !killed || !config.is_keepalive(),
            "{} did not stop",
            config.name()
        );
        reader.join().unwrap();
        let err = stderr.lock().unwrap().clone();
        if config.is_keepalive() {
            // "keepalive: N events, M lost"
            let line = err
                .lines()
                .find(|l| l.contains(" events, "))
                .unwrap_or_else(|| panic!("no summary: {err}"));
            let nums: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            sample.events = nums[0];
            sample.lost = nums[1];
        }
    }
    sample
}

fn start_keepalive(extra: &[&str]) -> Running {
    let child = Command::new(binary())
        .args(["trace", "--format", "json", "--output", "/dev/null"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    spawn_collecting(child, |err| err.contains("Tracing"))
}

/// The same hooks and the same work as keepalive's kernel side: the keepalive-timer filter,
/// the probe count before and after each run, resets, errors and state changes, one output
/// record each (`print`) or a count each.
fn bpftrace_script(print: bool) -> String {
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap();
    let addr = kallsyms
        .lines()
        .find(|l| l.ends_with(" tcp_keepalive_timer"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let (sk_timer, probes_out) = offsets();
    let script = format!(
        r#"tracepoint:timer:timer_expire_entry /args->function == 0x{addr}/ {{
  $sk = (uint64)args->timer - {sk_timer};
  @sk[cpu] = $sk;
  @before[cpu] = *(uint8 *)($sk + {probes_out});
}}
tracepoint:timer:timer_expire_exit /@sk[cpu] != 0 && (uint64)args->timer - {sk_timer} == @sk[cpu]/ {{
  $sk = @sk[cpu];
  $after = *(uint8 *)($sk + {probes_out});
  if ($after > @before[cpu]) {{ printf("probe %x %d\n", $sk, $after); }}
  @sk[cpu] = 0;
}}
tracepoint:tcp:tcp_send_reset {{ printf("reset_sent %x %d\n", args->skaddr, args->reason); }}
tracepoint:tcp:tcp_receive_reset {{ printf("reset_received %x\n", args->skaddr); }}
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {{ printf("state %x %d %d %d\n", args->skaddr, args->oldstate, args->newstate, pid); }}
tracepoint:sock:inet_sk_error_report /args->protocol == 6/ {{ printf("error %d\n", args->error); }}
tracepoint:tcp:tcp_destroy_sock {{ printf("destroy %x\n", args->skaddr); }}
tracepoint:skb:kfree_skb {{ printf("drop %d\n", args->reason); }}
"#
    );
    if print {
        return script;
    }
    // Each printf(...) becomes a count under the record's first word: the same hooks,
    // filters and reads, no record.
    script
        .lines()
        .map(|l| match (l.find("printf(\""), l.find("); }")) {
            (Some(a), Some(b)) => {
                let word = l[a + 8..].split([' ', '\\']).next().unwrap_or("n");
                format!("{}@{word} = count(){}", &l[..a], &l[b + 1..])
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keepalive timer's place in the socket and icsk_probes_out, from this kernel's BTF as
/// keepalive itself resolves them.
fn offsets() -> (u64, u64) {
    let types =
        keepalive_user::kernel::btf::load(keepalive_user::kernel::loader::default_btf_path())
            .expect("kernel BTF");
    (
        types.offsets.sk_timer.value.into(),
        types.offsets.probes_out.value.into(),
    )
}

fn start_bpftrace(print: bool) -> Running {
    // Its records go to a pipe we drain, as keepalive's go to /dev/null: both format every
    // record in user space. bpftrace says "Attaching N probes..." on stdout once attached.
    let mut child = Command::new("bpftrace")
        .args(["-e", &bpftrace_script(print)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let attached = Arc::new(AtomicBool::new(false));
    {
        let attached = attached.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 1 << 16];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if !attached.load(Ordering::Relaxed)
                    && String::from_utf8_lossy(&buf[..n]).contains("Attaching")
                {
                    attached.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    let r = spawn_collecting(child, move |_| attached.load(Ordering::Relaxed));
    thread::sleep(Duration::from_millis(300));
    r
}

/// A tracer process whose stderr is collected (for its start line and closing summary).
struct Running {
    child: Child,
    stderr: Arc<std::sync::Mutex<String>>,
    reader: thread::JoinHandle<()>,
}

/// Collects the child's stderr; returns once `ready` holds for what stderr said so far.
fn spawn_collecting(mut child: Child, ready: impl Fn(&str) -> bool) -> Running {
    let mut err = child.stderr.take().unwrap();
    let stderr = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&stderr.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "tracer did not start: {}",
            stderr.lock().unwrap()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "tracer exited: {}",
            stderr.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    }
    Running {
        child,
        stderr,
        reader,
    }
}

/// Busy CPU seconds of all CPUs since boot: /proc/stat's first line without idle, iowait
/// and steal (time the hypervisor gave to others is not this machine's work).
fn host_busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    busy / ticks_per_second()
}

/// The unit of /proc's CPU times (USER_HZ).
fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / ticks_per_second()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The kernel programs a tracer holds (fdinfo), by id, with their names (bpftool, once).
fn program_names(pid: u32) -> BTreeMap<String, String> {
    fdinfo_fields(pid, "prog_id:")
        .into_iter()
        .map(|id| {
            let name = bpftool_json(&["prog", "show", "id", &id])["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| id.clone());
            (id, name)
        })
        .collect()
}

/// Each program's run_time_ns and run_cnt so far (kernel.bpf_stats_enabled=1), summed by
/// name.
fn program_stats(pid: u32, names: &BTreeMap<String, String>) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for fd in dir.flatten() {
        let text = fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let (Some(id), Some(ns), Some(cnt)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        else {
            continue;
        };
        let name = names.get(&id).cloned().unwrap_or(id);
        let e = out.entry(name).or_default();
        e.0 += ns.parse::<u64>().unwrap_or(0);
        e.1 += cnt.parse::<u64>().unwrap_or(0);
    }
    out
}

/// The values of one fdinfo field over a process's descriptors.
fn fdinfo_fields(pid: u32, key: &str) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let text = fs::read_to_string(fd.path()).ok()?;
            Some(
                text.lines()
                    .find_map(|l| l.strip_prefix(key))?
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

fn bpftool_json(args: &[&str]) -> Value {
    Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

/// The id of the tracer's map called `name`, found among the maps the process holds
/// (fdinfo); looked up once per tracer, not at every reading.
fn map_id(pid: u32, name: &str) -> Option<String> {
    fdinfo_fields(pid, "map_id:")
        .into_iter()
        .find(|id| bpftool_json(&["map", "show", "id", id])["name"] == name)
}

/// The sum over CPUs and entries of a per-CPU counter map (EMITTED: records queued; LOST:
/// records that did not fit), read with bpftool.
fn counter_sum(id: &str) -> u64 {
    let mut total = 0u64;
    // [{"key": [...], "values": [{"cpu": 0, "value": ["0x01", ...]}, ...]}]
    for e in bpftool_json(&["map", "dump", "id", id])
        .as_array()
        .into_iter()
        .flatten()
    {
        for cpu in e["values"].as_array().into_iter().flatten() {
            let bytes: Vec<u8> = cpu["value"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
                .collect();
            if let Ok(b) = <[u8; 8]>::try_from(bytes.as_slice()) {
                total += u64::from_le_bytes(b);
            }
        }
    }
    total
}

struct BpfStats(String);

impl BpfStats {
    fn enable() -> BpfStats {
        let old = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or("0".into());
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
        BpfStats(old.trim().to_string())
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// The storm holds two descriptors per connection; root may raise the limit up to nr_open.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let want = nr_open.min(1 << 20);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err()
        && let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// A listener in the server namespace with a deep accept queue (4096, as somaxconn allows):
/// with std's 128, a few milliseconds in which the acceptor does not run overflow it, and
/// each dropped SYN stalls the connecting loop for the 1 s SYN retransmission timeout, so
/// the workload would measure scheduling luck rather than cost.
fn listener(link: &Link) -> (TcpListener, SocketAddr) {
    let bind = SocketAddr::new(link.b_addr, 0);
    let l: TcpListener = link.b.run(move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&bind.into()).unwrap();
        s.listen(4096).unwrap();
        s.into()
    });
    let a = SocketAddr::new(link.b_addr, l.local_addr().unwrap().port());
    (l, a)
}

fn in_netns(link: &Link) -> fs::File {
    fs::File::open(format!("/run/netns/{}", link.a.name)).unwrap()
}

/// Connections per second: connect, accept, close.
fn churn(link: &Link, secs: f64, _: usize, window: &Window) -> f64 {
    let (l, target) = listener(link);
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        thread::spawn(move || {
            // Blocking accepts; the last connection below wakes it to see `stop`.
            while let Ok((s, _)) = l.accept() {
                drop(s);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let ns = in_netns(link);
    let stop2 = stop.clone();
    window.open();
    let n = thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut n = 0u64;
        let mut buf = [0u8; 1];
        while Instant::now() < end {
            // The server closes first, as HTTP servers do: TIME_WAIT stays on its side and
            // the client's ports are free again at once, so every round sees the same
            // port space. Reading the end of stream first keeps it that way.
            if let Ok(mut c) = TcpStream::connect(target) {
                let _ = c.read(&mut buf);
                n += 1;
            }
        }
        stop2.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(target);
        n
    })
    .join()
    .unwrap();
    window.close();
    acceptor.join().unwrap();
    n as f64 / secs
}

/// MB/s through one connection.
fn bulk(link: &Link, secs: f64, _: usize, window: &Window) -> f64 {
    let conn = link.connect(|_| {});
    let mut server = conn.server;
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = server.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut client = conn.client;
    let buf = vec![7u8; 1 << 16];
    window.open();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        client.write_all(&buf).unwrap();
    }
    window.close();
    drop(client);
    let total = reader.join().unwrap();
    total as f64 / secs / 1e6
}

/// Keepalive probes per second handled by the kernel (TcpExt TCPKeepAlive), with `n` idle
/// connections probing every second and answered. They are held by worker processes, as
/// many as it takes: one process may hold only RLIMIT_NOFILE descriptors, two per
/// connection, and root without CAP_SYS_RESOURCE cannot raise that.
fn storm(link: &Link, secs: f64, n: usize, window: &Window) -> f64 {
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft as usize)
        .unwrap_or(1024);
    let per_worker = (fd_limit.saturating_sub(200) / 2).clamp(1, 9000);
    let mut workers = vec![];
    let mut left = n;
    while left > 0 {
        let count = left.min(per_worker);
        left -= count;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--storm-worker",
                &link.a.name,
                &link.b.name,
                &link.b_addr.to_string(),
                &count.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // "ready" once its connections are up; a worker that fails closes stdout instead.
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready", "storm worker failed");
        workers.push(child);
    }
    thread::sleep(Duration::from_millis(1500)); // probing in step
    let count = || -> u64 {
        let ns = in_netns(link);
        thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let text = fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
            let mut lines = text.lines();
            while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
                if h.starts_with("TcpExt:") {
                    let i = h
                        .split_whitespace()
                        .position(|k| k == "TCPKeepAlive")
                        .unwrap();
                    return v.split_whitespace().nth(i).unwrap().parse().unwrap();
                }
            }
            0
        })
        .join()
        .unwrap()
    };
    // Timed by the clock, not by the sleep: on a machine this loaded a sleep overruns.
    let (before, t0) = (count(), Instant::now());
    window.open();
    thread::sleep(Duration::from_secs_f64(secs));
    window.close();
    let (after, t1) = (count(), Instant::now());
    let probes = after - before;
    let secs = (t1 - t0).as_secs_f64();
    for mut w in workers {
        drop(w.stdin.take()); // the worker's signal to close its connections and exit
        let (status, killed) = keepalive_tests::tracer::wait_bounded(w, Duration::from_secs(30));
        assert!(!killed && status.success(), "storm worker: {status}");
    }
    probes as f64 / secs
}

/// `keepalive-bench --storm-worker NS_A NS_B ADDR N`: N connections from namespace NS_A to a
/// listener at ADDR in NS_B, the clients probing every second (the server answers), held
/// until stdin closes.
fn storm_worker(args: &[String]) {
    let [ns_a, ns_b, addr, n] = args else {
        panic!("usage: --storm-worker NS_A NS_B ADDR N");
    };
    let n: usize = n.parse().unwrap();
    let netns = |name: &str| fs::File::open(format!("/run/netns/{name}")).unwrap();
    let (ns_a, ns_b) = (netns(ns_a), netns(ns_b));
    let bind = SocketAddr::new(addr.parse().unwrap(), 0);
    let l: TcpListener = thread::spawn(move || {
        nix::sched::setns(&ns_b, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        s.bind(&bind.into()).unwrap();
        s.listen(4096).unwrap();
        TcpListener::from(s)
    })
    .join()
    .unwrap();
    let target = l.local_addr().unwrap();
    let clients = thread::spawn(move || {
        nix::sched::setns(&ns_a, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        (0..n)
            .map(|_| {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(target),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                keepalive(1, 1, 9)(&s);
                s.connect(&target.into()).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    let accepted: Vec<_> = (0..n).map(|_| l.accept().unwrap().0).collect();
    let conns = (clients.join().unwrap(), accepted);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut vec![]);
    drop(conns);
}

/// Timers that are not keepalive: blocking receives with a 1 ms timeout (schedule_timeout
/// arms and expires a timer_list each time), on several threads.
fn timers(link: &Link, secs: f64, _: usize, window: &Window) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    window.open();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let total = total.clone();
            let ns = in_netns(link);
            thread::spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut buf = [0u8; 8];
                while Instant::now() < end {
                    let _ = s.recv(&mut buf);
                    total.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    window.close();
    total.load(Ordering::Relaxed) as f64 / secs
}

/// Drops per second that concern no connection: TCP segments with RST set, to a port
/// nobody listens on (the kernel frees each, NO_SOCKET, and answers none), sent from 4
/// threads through raw sockets. One keepalive connection probes meanwhile, so the tracer
/// follows a connection and each drop is looked up, as on a host with one dying.
fn drops(link: &Link, secs: f64, _: usize, window: &Window) -> f64 {
    let (Some(src), Some(dst)) = (v4(link.a_addr), v4(link.b_addr)) else {
        panic!("the bench link is IPv4");
    };
    let _probing = link.connect(keepalive(1, 1, 3));
    // Its first probe, so the tracer follows it before the timed part.
    thread::sleep(Duration::from_millis(1500));
    let segment = rst_segment(src, dst, 40000, 9);
    let total = Arc::new(AtomicU64::new(0));
    window.open();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let total = total.clone();
            let ns = in_netns(link);
            thread::spawn(move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let s = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::RAW,
                    Some(socket2::Protocol::TCP),
                )
                .unwrap();
                let to: socket2::SockAddr = SocketAddr::new(dst.into(), 0).into();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                let mut n = 0;
                while Instant::now() < end {
                    if s.send_to(&segment, &to).is_ok() {
                        n += 1;
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    window.close();
    total.load(Ordering::Relaxed) as f64 / secs
}

fn v4(a: std::net::IpAddr) -> Option<std::net::Ipv4Addr> {
    match a {
        std::net::IpAddr::V4(a) => Some(a),
        _ => None,
    }
}

/// A 20-byte TCP header with RST|ACK from `sport` to `dport`, its checksum over the IPv4
/// pseudo-header of `src` -> `dst` (a bad one would be dropped for that instead).
fn rst_segment(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    sport: u16,
    dport: u16,
) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x14;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&20u16.to_be_bytes());
    add(&h);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}

/// Heap bytes in use, counted by the global allocator: what the engine holds, exactly,
/// unlike RSS, which keeps what an earlier measurement freed.
struct CountingAllocator;

static HEAP_IN_USE: AtomicU64 = AtomicU64::new(0);

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HEAP_IN_USE.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HEAP_IN_USE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The decoder and correlation engine alone, fed synthetic records of `connections` live
/// keepalive connections: heap bytes per tracked connection and events per second on one
/// core, as `keepalive trace` runs them (no timelines) and as `keepalive why` does (each
/// connection's recent events kept).
fn engine_scale(connections: u64) -> Value {
    json!({
        "connections": connections,
        "trace": engine_run(connections, false),
        "why": engine_run(connections, true),
    })
}

fn engine_run(connections: u64, timelines: bool) -> Value {
    use keepalive_common::{Record, flag, kind};
    use keepalive_events::{decode::Decoder, diagnose::Engine};
    let heap0 = HEAP_IN_USE.load(Ordering::Relaxed);
    let mut decoder = Decoder::new(250, 0, vec![]);
    let mut engine = Engine::new(connections as usize * 2);
    if !timelines {
        engine = engine.without_timelines();
    }
    let mut r: Record = unsafe { std::mem::zeroed() };
    r.family = 2;
    let start = Instant::now();
    let mut events = 0u64;
    for round in 0..3u64 {
        for i in 0..connections {
            r.skaddr = 0xffff_8880_0000_0000 + i * 4096;
            r.cookie = i + 1;
            r.sport = (i % 60000) as u16 + 1;
            r.dport = 443;
            r.saddr[..4].copy_from_slice(&(0x0a00_0000u32 + i as u32).to_be_bytes());
            r.ts_ns = round * 1_000_000_000 + i;
            if round == 0 {
                r.kind = kind::STATE_CHANGE;
                r.arg0 = 2;
                r.arg1 = 1;
                r.flags = 0;
            } else {
                r.kind = kind::KEEPALIVE_PROBE;
                r.state = 1;
                r.arg0 = round as u32;
                r.flags = flag::HAS_KEEPALIVE;
                r.keepalive.idle_jiffies = 250;
                r.keepalive.interval_jiffies = 250;
                r.keepalive.count = 9;
                r.keepalive.enabled = 1;
            }
            for e in decoder.decode(&r.into()) {
                let _ = engine.observe(&e);
            }
            events += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let heap = HEAP_IN_USE.load(Ordering::Relaxed).saturating_sub(heap0);
    assert_eq!(engine.tracked() as u64, connections);
    json!({
        "bytes_per_connection": heap as f64 / connections as f64,
        "megabytes": heap as f64 / 1e6,
        "events_per_s": events as f64 / elapsed,
    })
}

/// What `keepalive trace --format json` spends on one record in user space, without the
/// kernel: ring-buffer bytes of a keepalive storm (each socket's connect, then an answer and
/// a probe per round) parsed, decoded, correlated and written as JSON lines to a sink. The
/// storm's own figure includes reading the ring and whatever else shares the tracer's CPU;
/// this isolates the per-record code, so changes to it can be compared run to run.
fn record_path(sockets: u64) -> Value {
    use keepalive_common::{Record, flag, kind};
    use keepalive_user::{
        decode::{Decoder, parse_record},
        diagnose::ConnectionFilter,
        output::{Format, Writer},
        pipeline::{Pipeline, Show},
    };
    let mut r: Record = unsafe { std::mem::zeroed() };
    r.family = 2;
    r.comm[..6].copy_from_slice(b"worker");
    r.pid = 4242;
    r.netns = 4026531840;
    r.dport = 5000;
    r.saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
    r.daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
    let mut bytes: Vec<u8> = vec![];
    let mut push = |r: &Record| {
        // SAFETY: Record is plain old data (repr(C), integers and byte arrays).
        bytes.extend_from_slice(unsafe {
            std::slice::from_raw_parts((r as *const Record).cast::<u8>(), Record::SIZE)
        })
    };
    const ROUNDS: u64 = 4;
    for round in 0..=ROUNDS {
        for i in 0..sockets {
            r.skaddr = 0xffff_8880_0000_0000 + i * 4096;
            r.cookie = i + 1;
            r.ino = 100_000 + i;
            r.sport = (i % 60000) as u16 + 1;
            r.ts_ns = 1_000_000_000 * (round + 1) + i * 1000;
            if round == 0 {
                r.kind = kind::STATE_CHANGE;
                r.arg0 = 7; // CLOSE -> SYN_SENT: connect(), in the owner's context
                r.arg1 = 2;
                r.flags = 0;
                push(&r);
                continue;
            }
            r.state = 1;
            r.flags = flag::HAS_KEEPALIVE;
            r.keepalive.idle_jiffies = 250;
            r.keepalive.interval_jiffies = 250;
            r.keepalive.count = 9;
            r.keepalive.enabled = 1;
            // From the second round on, each run finds the last probe answered and sends the
            // next: one record for both, as the kernel side writes it.
            r.kind = kind::KEEPALIVE_PROBE;
            r.arg0 = 1;
            r.keepalive.probes_out = 1;
            if round > 1 {
                r.flags |= flag::ANSWERED_FIRST;
                r.arg1 = 1;
            }
            push(&r);
        }
    }
    let records = bytes.len() / Record::SIZE;
    let (mut best, mut events) = (f64::MAX, 0);
    // The fastest of a few passes: the least disturbed by whatever else the machine runs.
    for _ in 0..5 {
        let mut decoder = Decoder::new(250, 0, vec![]);
        let out = Writer::new(Format::Json, Box::new(std::io::sink()));
        let mut pipeline = Pipeline::new(Show::Trace, vec![], ConnectionFilter::default(), out);
        let start = Instant::now();
        for b in bytes.chunks_exact(Record::SIZE) {
            let p = parse_record(b).unwrap();
            for e in decoder.decode(&p) {
                pipeline.event(&e).unwrap();
            }
        }
        pipeline.flush().unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        events = pipeline.summary().events;
    }
    assert_eq!(
        events as usize,
        records + (ROUNDS as usize - 1) * sockets as usize
    );
    json!({
        "sockets": sockets,
        "records": records,
        "events": events,
        "ns_per_record": best * 1e9 / records as f64,
        "ns_per_event": best * 1e9 / events as f64,
    })
}

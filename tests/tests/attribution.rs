//! Whose connection died: three clients, in cgroups named as a systemd unit, a docker
//! container and a Kubernetes pod (whose name the kubelet's pod log directory gives), and a
//! server in a unit's cgroup (an accepted connection), die by silent drop; each verdict names
//! its owner's unit, container or pod, and a filter by each selects that connection only,
//! live and in a replayed recording.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use keepalive_tests::{
    IdleServer, Link, Tracer,
    capture::Capture,
    cgroup::Cgroup,
    is_root,
    ssh::TempDir,
    tracer::{binary, events_of},
};
use serde_json::Value;

#[test]
fn verdicts_name_the_unit_container_and_pod_and_filters_select_each() {
    assert!(
        is_root(),
        "end-to-end tests load BPF programs: run as root (cargo xtask test)"
    );
    let me = std::process::id();
    let container = format!("{:016x}", 0x4b41_0000_0000_0000u64 | me as u64).repeat(4);
    let pod_container = format!("{:016x}", 0x504f_0000_0000_0000u64 | me as u64).repeat(4);
    let uid = format!("{me:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
    let (namespace, pod_name) = ("shop", format!("web-{me}"));
    let unit = format!("ka-web-{me}.service");
    let server_unit = format!("ka-db-{me}.service");
    let server_cgroup = Cgroup::new(&format!("ka-test.slice/{server_unit}"));

    let cgroups = [
        ("unit", Cgroup::new(&format!("ka-test.slice/{unit}"))),
        (
            "container",
            Cgroup::new(&format!("system.slice/docker-{container}.scope")),
        ),
        (
            "pod",
            Cgroup::new(&format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{pod_container}.scope",
                uid.replace('-', "_")
            )),
        ),
    ];
    // The kubelet's log directory for the pod: how a node names a pod UID.
    let pod_logs = TempDir::new("pods");
    std::fs::create_dir_all(pod_logs.0.join(format!("{namespace}_{pod_name}_{uid}"))).unwrap();
    let pod_logs_dir = pod_logs.0.to_str().unwrap().to_string();

    let link = Link::new("client", "server", false);
    let server = IdleServer::start(&link.b, link.b_addr, None);
    let ns = link.a.name.clone();
    let with = |extra: &[&str]| {
        let mut args = vec!["--pod-logs", &pod_logs_dir];
        args.extend_from_slice(extra);
        Tracer::trace_netns(&ns, &args)
    };
    let metrics_port = keepalive_tests::metrics::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut all = with(&["--metrics", &metrics_addr]);
    let pod_filter = format!("{namespace}/{pod_name}");
    let filtered = [
        ("unit", with(&["--unit", unit.trim_end_matches(".service")])),
        ("container", with(&["--container", &container[..12]])),
        ("pod", with(&["--pod", &pod_filter])),
    ];

    let capture = Capture::start(&link.a);
    let mut clients: Vec<_> = cgroups
        .iter()
        .map(|(role, cg)| (*role, cg.client(&ns, server.addr, (2, 1, 2))))
        .collect();
    // A server in a unit's cgroup whose accepted connection dies: no connect() of its own,
    // its owner is found through the socket's file.
    let mut peer = None;
    let accepting = server_cgroup.server(&ns, link.a_addr, (2, 1, 2), |port| {
        let to = std::net::SocketAddr::new(link.a_addr, port);
        peer = Some(
            link.b
                .run(move || std::net::TcpStream::connect(to).unwrap()),
        );
    });
    clients.push(("accepting", accepting));
    let port_of: HashMap<&str, u16> = clients.iter().map(|(r, c)| (*r, c.port)).collect();
    link.blackhole_b_all();
    for (role, client) in &mut clients {
        let how = client.ended(Duration::from_secs(30));
        assert_eq!(
            how, "error 110",
            "the {role} client's connection: ETIMEDOUT"
        );
    }

    // The metrics label each end with its owner's unit or pod.
    for role in ["unit", "container", "pod", "accepting"] {
        let port = port_of[role];
        all.wait_for(Duration::from_secs(10), |l| {
            l["type"] == "verdict" && l["sport"] == port
        })
        .unwrap_or_else(|| panic!("no verdict for the {role} client"));
    }
    let metrics = keepalive_tests::metrics::scrape(metrics_port);
    let ends = |label: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("keepalive_connection_ends_total{verdict=\"keepalive_timeout\"")
                    && l.contains(label)
            })
            .count()
    };
    assert_eq!(ends(&format!("unit=\"{unit}\"")), 1, "{metrics}");
    assert_eq!(
        ends(&format!("pod=\"{namespace}/{pod_name}\"")),
        1,
        "{metrics}"
    );
    let lines = all.stop();
    // Every connection's probes and timeout RST, in the unfiltered trace as on the wire.
    let wire = capture.stop();
    let on_wire = |lines: &[Value], role: &str| {
        let port = port_of[role];
        let seen = wire.assert_traced(SocketAddr::new(link.a_addr, port), &events_of(lines, port));
        assert_eq!(
            (seen.probes, seen.answers, seen.resets_sent),
            (2, 0, 1),
            "{role}"
        );
    };
    for role in port_of.keys() {
        on_wire(&lines, role);
    }
    let verdict = |lines: &[Value], port: u16| -> Value {
        let found: Vec<&Value> = lines
            .iter()
            .filter(|l| l["type"] == "verdict" && l["sport"] == port)
            .collect();
        assert_eq!(found.len(), 1, "one verdict for port {port}: {found:?}");
        found[0].clone()
    };
    let accepting = ("accepting", server_cgroup);
    for (role, cg) in cgroups.iter().chain([&accepting]) {
        let v = verdict(&lines, port_of[role]);
        assert_eq!(v["verdict"], "keepalive_timeout", "{role}: {v}");
        assert_eq!(v["comm"], "keepalive-test-", "{role}: {v}");
        assert_eq!(v["cgroup"], cg.path.as_str(), "{role}: {v}");
        let named = |field: &str| v.get(field).and_then(Value::as_str).map(str::to_string);
        match *role {
            "unit" => {
                assert_eq!(named("unit"), Some(unit.clone()), "{v}");
                assert_eq!((named("container"), named("pod")), (None, None), "{v}");
            }
            "container" => {
                assert_eq!(named("container"), Some(container.clone()), "{v}");
                assert_eq!((named("unit"), named("pod")), (None, None), "{v}");
            }
            "accepting" => {
                assert_eq!(named("unit"), Some(server_unit.clone()), "{v}");
                assert_eq!(v["sport"], port_of["accepting"], "{v}");
            }
            _ => {
                assert_eq!(named("pod"), Some(pod_filter.clone()), "{v}");
                assert_eq!(named("pod_uid"), Some(uid.clone()), "{v}");
                assert_eq!(named("container"), Some(pod_container.clone()), "{v}");
            }
        }
        // Its probes name the owner too, though they run in no process's context.
        let probes: Vec<Value> = events_of(&lines, port_of[role])
            .into_iter()
            .filter(|e| e["kind"] == "keepalive_probe")
            .collect();
        assert!(!probes.is_empty(), "{role}: no probes");
        assert!(
            probes.iter().all(|p| p["cgroup"] == cg.path.as_str()),
            "{role}: {probes:?}"
        );
    }

    for (role, tracer) in filtered {
        let lines = tracer.stop();
        verdict(&lines, port_of[role]);
        // What a filter selects, it shows whole.
        on_wire(&lines, role);
        for (other, port) in &port_of {
            if *other != role {
                assert!(
                    events_of(&lines, *port).is_empty()
                        && !lines
                            .iter()
                            .any(|l| l["type"] == "verdict" && l["sport"] == *port),
                    "--{role} let the {other} connection through"
                );
            }
        }
    }

    // The morning after: a recording replayed, filtered by pod, in words.
    let recording = TempDir::new("rec");
    let file = recording.0.join("trace.jsonl");
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let out = std::process::Command::new(binary())
        .args(["why", "--from", file.to_str().unwrap(), "--pod", &pod_name])
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "why --from: {human}");
    assert!(
        human.contains(">>> KEEPALIVE_TIMEOUT")
            && human.contains(&format!(":{} ->", port_of["pod"]))
            && human.contains(&format!("pod {pod_filter}")),
        "{human}"
    );
    drop((server, peer));
}

//! Records and configuration shared by keepalive's kernel programs and its user side.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel writes [`Record`]s into a ring
//! buffer and the user side decodes them byte for byte, and the user side fills
//! [`KernelConfig`] (struct offsets read from BTF, filters) before the programs load.
#![cfg_attr(not(test), no_std)]

pub mod programs;

/// Names of the maps and globals both sides refer to.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const EMITTED: &str = "EMITTED";
    pub const ORDINARY_ENDS: &str = "ORDINARY_ENDS";
    pub const LIVES: &str = "LIVES";
    pub const CONFIG: &str = "CONFIG";
    /// `keepalive enforce`: its sock_ops program, its settings, and its two record streams
    /// (one it reads itself, one pinned for `keepalive trace`).
    pub const ENFORCE_PROGRAM: &str = "keepalive_enforce";
    pub const ENFORCE_CONFIG: &str = "ENFORCE";
    pub const ENFORCE_REPORT: &str = "ENFORCE_REPORT";
    pub const ENFORCED: &str = "ENFORCED";
    /// Where enforce pins ENFORCED, one directory per running enforce: `enforce-<pid>/events`.
    pub const ENFORCE_PIN_DIR: &str = "/sys/fs/bpf/keepalive";
}

/// Declares the record kinds once: the [`Kind`] enum, its wire numbers as `u8` constants in
/// [`kind`] (what the kernel side writes), the name its events carry, and the conversion
/// back from a byte. A new kind is one line here (and its decoding and display).
macro_rules! record_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $number:literal, $constant:ident, $name:literal; )*) => {
        /// What a [`Record`] reports. The numbers are the wire format between the two sides.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Kind {
            $( $(#[$doc])* $variant = $number, )*
        }

        impl Kind {
            /// Every kind, in wire order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The kind of event it decodes to, as printed (`keepalive_probe`, ...).
            pub const fn event_name(self) -> &'static str {
                match self {
                    $( Kind::$variant => $name, )*
                }
            }
        }

        impl TryFrom<u8> for Kind {
            /// The byte, which is no kind.
            type Error = u8;

            fn try_from(byte: u8) -> Result<Kind, u8> {
                match byte {
                    $( $number => Ok(Kind::$variant), )*
                    _ => Err(byte),
                }
            }
        }

        /// [`Kind`]s as the bytes the kernel side writes into [`Record::kind`].
        pub mod kind {
            $( pub const $constant: u8 = $number; )*
        }
    };
}

record_kinds! {
    /// The keepalive timer sent a probe; `arg0` is the count of unanswered probes now.
    KeepaliveProbe = 1, KEEPALIVE_PROBE, "keepalive_probe";
    /// Probes were outstanding and the count went back to 0: the peer answered.
    /// `arg0` is how many probes were outstanding.
    KeepaliveAnswered = 2, KEEPALIVE_ANSWERED, "keepalive_answered";
    /// The keepalive timer gave up on the connection; `arg0` is the unanswered probe count.
    KeepaliveTimeout = 3, KEEPALIVE_TIMEOUT, "keepalive_timeout";
    /// We sent a RST; `arg0` is the kernel's `enum sk_rst_reason` or [`REASON_UNKNOWN`].
    /// In kprobe mode `arg1` is the low 32 bits of the address `tcp_send_active_reset()` was
    /// called from (0 otherwise), so user space can name the cause on kernels without reasons.
    ResetSent = 4, RESET_SENT, "reset_sent";
    /// A RST arrived for this socket.
    ResetReceived = 5, RESET_RECEIVED, "reset_received";
    /// TCP state changed from `arg0` to `arg1`.
    StateChange = 6, STATE_CHANGE, "state_change";
    /// An error was reported on the socket; `arg0` is the errno.
    SocketError = 7, SOCKET_ERROR, "socket_error";
    /// The kernel destroyed the socket; nothing more will be seen of it.
    SocketDestroyed = 8, SOCKET_DESTROYED, "socket_destroyed";
    /// Data was retransmitted; `arg0` is the count of retransmissions without an answer.
    Retransmit = 9, RETRANSMIT, "retransmit";
    /// `keepalive enforce` turned keepalive on for a new connection (`arg0` 1), or would have
    /// in a dry run (`arg0` 0); `arg1` 1 when the socket had keepalive on already (--force).
    KeepaliveEnforced = 10, KEEPALIVE_ENFORCED, "keepalive_enforced";
    /// The connection reached CLOSE: a state change to CLOSE followed by a
    /// [`ConnectionLife`] (a [`LifeRecord`]), what the kernel kept of its earlier
    /// transitions instead of a record each. `pid` and `comm` are its owner's when
    /// [`ConnectionLife::owner_from`] says so. Printed as a state change.
    ConnectionClosed = 11, CONNECTION_CLOSED, "state_change";
    /// This host dropped one of the connection's packets: `arg0` is the kernel's
    /// `enum skb_drop_reason`, `arg1` a [`drop_direction`]. Only for connections that may be
    /// dying (keepalive probes out, retransmitting) or that a port filter names.
    PacketDropped = 12, PACKET_DROPPED, "packet_dropped";
}

/// TCP states (include/net/tcp_states.h), as `skc_state` and the records hold them.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    pub const BOUND_INACTIVE: u8 = 13;
}

/// Address families, as [`Record::family`] holds them.
pub mod family {
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// Values of a [`Kind::PacketDropped`] record's `arg1`: whose packet this host dropped.
pub mod drop_direction {
    /// The peer's, arriving (an answer this host threw away).
    pub const ARRIVING: u32 = 0;
    /// The connection's own, leaving (a probe that never left).
    pub const LEAVING: u32 = 1;
}

/// Connections whose dropped packets the kernel side reports (see [`Kind::PacketDropped`]),
/// by address and port pair (the FLOWS map, preallocated), as many as [`CONNECTION_LIFE_SLOTS`]: a
/// storm of 50,000 probing connections fits. Past it, each time a connection starts probing
/// and is not followed, a `packet_dropped` is counted lost.
pub const FOLLOWED_FLOW_SLOTS: u32 = CONNECTION_LIFE_SLOTS;

/// Entries of the LOST map: one per record kind (see [`Kind`]), so user space can say what
/// was lost.
pub const LOST_SLOTS: u32 = 16;
const _: () = assert!(Kind::ALL.len() < LOST_SLOTS as usize);

/// Sockets whose keepalive timer ran that the kernel side keeps a copy of (identity,
/// settings, probes reported; the KNOWN map, preallocated). Past it, a socket's runs read
/// its fields each time and answers to its probes count as lost.
pub const KNOWN_SOCKET_SLOTS: u32 = 1 << 17;

/// `arg0` of a reset when the kernel does not say why (no reason argument before Linux 6.10).
pub const REASON_UNKNOWN: u32 = u32::MAX;

/// Bits of [`Record::flags`] (bit 0 is free).
pub mod flag {
    /// [`super::Record::keepalive`] was read for this event.
    pub const HAS_KEEPALIVE: u8 = 1 << 1;
    /// A reset with no socket: addresses come from the packet that provoked it.
    pub const NO_SOCKET: u8 = 1 << 2;
    /// A reset from a socket with SO_LINGER on and a zero linger time: close() aborts it.
    pub const LINGER_ZERO: u8 = 1 << 3;
    /// A keepalive probe whose timer run first found earlier probes answered (`arg1` of
    /// them): one record for the answer and the probe that follows it, the usual pair when
    /// probes are answered and the idle time is no longer than the interval.
    pub const ANSWERED_FIRST: u8 = 1 << 4;
}

/// Bits of [`KeepaliveSettings::set_by_socket`]: which values the socket set itself
/// (setsockopt) rather than inheriting the network namespace's sysctl.
pub mod set_by_socket {
    pub const IDLE: u8 = 1 << 0;
    pub const INTERVAL: u8 = 1 << 1;
    pub const COUNT: u8 = 1 << 2;
}

/// A socket's effective keepalive configuration when an event was captured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// Idle time before the first probe, in jiffies (TCP_KEEPIDLE or tcp_keepalive_time).
    pub idle_jiffies: u32,
    /// Time between probes, in jiffies (TCP_KEEPINTVL or tcp_keepalive_intvl).
    pub interval_jiffies: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 when unset.
    pub user_timeout_ms: u32,
    /// Unanswered probes before giving up (TCP_KEEPCNT or tcp_keepalive_probes).
    pub count: u8,
    /// Probes sent and not answered yet (`icsk_probes_out`).
    pub probes_out: u8,
    /// SO_KEEPALIVE is on.
    pub enabled: u8,
    /// See [`set_by_socket`].
    pub set_by_socket: u8,
}

/// One event, as the kernel writes it into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the socket: identifies it until it is destroyed.
    pub skaddr: u64,
    /// Socket cookie, 0 when the kernel has not assigned one yet.
    pub cookie: u64,
    /// Local and remote address: 4 bytes used for IPv4, 16 for IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network namespace inode number.
    pub netns: u32,
    /// Thread group id of the task running when the event fired (process context only).
    pub pid: u32,
    /// Local and remote port, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// See [`kind`].
    pub kind: u8,
    /// TCP state of the socket when captured.
    pub state: u8,
    pub arg0: u32,
    pub arg1: u32,
    /// See [`flag`].
    pub flags: u8,
    /// Retransmissions not acknowledged yet (`icsk_retransmits`), for state changes and errors.
    pub retransmits: u8,
    pub _pad: [u8; 6],
    /// Command name of the task running when the event fired.
    pub comm: [u8; 16],
    /// Valid when [`flag::HAS_KEEPALIVE`] is set.
    pub keepalive: KeepaliveSettings,
    /// Inode of the socket's file (as in /proc/PID/fd: `socket:[ino]`), 0 when it has none:
    /// how user space finds the owning process of sockets it did not see connect.
    pub ino: u64,
    /// Cgroup (v2) id of the task in `pid`: the directory's inode number in the cgroup
    /// filesystem, which names the service, container or pod that owns the connection.
    pub cgroup: u64,
}

impl Record {
    pub const SIZE: usize = core::mem::size_of::<Record>();
}

/// What the kernel side keeps of a connection's start and application close (by default:
/// with `all_states` every transition is a record of its own), sent once when it closes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionLife {
    /// CLOCK_MONOTONIC nanoseconds when it became ESTABLISHED; 0 when that was not seen.
    pub established_ns: u64,
    /// When the application closed it (ESTABLISHED -> FIN_WAIT1, or CLOSE_WAIT -> LAST_ACK);
    /// 0 when it did not.
    pub app_closed_ns: u64,
    /// The state the application's close left: ESTABLISHED (it closed first) or CLOSE_WAIT
    /// (after the peer had).
    pub app_closed_from: u8,
    /// Where the record's `pid` and `comm` come from: see [`owner_from`].
    pub owner_from: u8,
    pub _pad: [u8; 6],
}

/// Values of [`ConnectionLife::owner_from`].
pub mod owner_from {
    /// Not known: the record's task is whoever ran when it closed.
    pub const UNKNOWN: u8 = 0;
    /// The task that called connect().
    pub const CONNECT: u8 = 1;
    /// The task that called close() or shutdown().
    pub const CLOSE: u8 = 2;
}

/// What the kernel side keeps of a connection until it closes (an entry of its LIVES table,
/// by socket address): its life and, when known, its owner. User space reads `alive` only,
/// to sweep the entries of connections that ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Life {
    pub life: ConnectionLife,
    pub pid: u32,
    /// Why its end is of interest so far: see [`life_mark`].
    pub marks: u8,
    /// 1 while the connection lives; 0 once it ended, for the next socket at the same
    /// address to take over.
    pub alive: u8,
    pub _pad: [u8; 2],
    /// The command name in words: copied with two loads, not a byte loop. A byte loop is
    /// the shared memmove the identity's addresses go through from the socket, and the
    /// verifier refuses one instruction loading from two kinds of pointer.
    pub comm: [u64; 2],
    /// The owner's cgroup id.
    pub cgroup: u64,
    /// CLOCK_MONOTONIC nanoseconds when it ended (once `alive` is 0): user space removes
    /// only entries that have been dead a while, which no new connection is taking over.
    pub ended_ns: u64,
}

/// Bits of [`Life::marks`]: what happened to a connection that makes its end of interest.
pub mod life_mark {
    /// A reset sent or received, an error, a retransmission, or a keepalive timer run.
    pub const TROUBLE: u8 = 1 << 0;
    /// SO_KEEPALIVE was on when a transition looked.
    pub const KEEPALIVE: u8 = 1 << 1;
}

/// A [`kind::CONNECTION_CLOSED`] record as the kernel writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifeRecord {
    pub record: Record,
    pub life: ConnectionLife,
}

impl LifeRecord {
    pub const SIZE: usize = core::mem::size_of::<LifeRecord>();
}

/// Connections whose start the kernel side keeps until they close (the LIVES map,
/// preallocated). Past it, a connection's transitions are each sent as they happen.
pub const CONNECTION_LIFE_SLOTS: u32 = 1 << 16;

/// A kernel field the programs read: its byte offset (or, for an enum value, the value),
/// resolved from BTF at start, typed with what the programs read there. The type is the
/// width the user side checks against BTF, so a read of the wrong width cannot compile.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
pub struct Field<T> {
    pub value: u32,
    _read_as: core::marker::PhantomData<T>,
}

impl<T> Field<T> {
    pub const ZERO: Field<T> = Field::at(0);

    pub const fn at(value: u32) -> Field<T> {
        Field {
            value,
            _read_as: core::marker::PhantomData,
        }
    }
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Field<T> {}

/// What a [`Field`] is read as, so its width in the kernel can be checked.
pub trait ReadAs {
    /// Bytes read; None for what is not read itself (an embedded struct, an enum value).
    const WIDTH: Option<usize>;
}

macro_rules! read_as_itself {
    ($($t:ty),*) => { $( impl ReadAs for $t { const WIDTH: Option<usize> = Some(core::mem::size_of::<$t>()); } )* };
}
read_as_itself!(u8, u16, u32, u64, i32, [u8; 16]);

/// A struct embedded in another, whose offset a program adds to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedded;
impl ReadAs for Embedded {
    const WIDTH: Option<usize> = None;
}

/// A value of a kernel enum (a bit number of `sk_flags`), not an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnumValue;
impl ReadAs for EnumValue {
    const WIDTH: Option<usize> = None;
}

/// A pointer, read as an address.
pub type Pointer = u64;

/// Where BTF says a [`Field`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A member (dot-separated path through anonymous structs and unions) of the first of
    /// these structs that has it.
    Member(&'static [(&'static str, &'static str)]),
    /// A member of a kernel enum: `(enum, member)`.
    EnumMember(&'static str, &'static str),
}

/// One kernel field as declared in [`kernel_fields!`]: what the user side looks up in BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldDecl {
    pub name: &'static str,
    pub place: Place,
    /// Bytes the programs read, checked against BTF (see [`ReadAs`]).
    pub width: Option<usize>,
}

/// Declares each kernel field once: its [`Offsets`] member, typed with what the programs
/// read, its zero, and where BTF has it ([`Offsets::FIELDS`], [`Offsets::resolve`]).
macro_rules! kernel_fields {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty = $place:expr; )*) => {
        /// The kernel fields the programs read, resolved from BTF at start.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Offsets {
            $( $(#[$doc])* pub $name: Field<$ty>, )*
        }

        impl Offsets {
            pub const ZERO: Offsets = Offsets { $( $name: Field::ZERO, )* };

            /// Every field, in declaration order.
            pub const FIELDS: &'static [FieldDecl] = &[$(
                FieldDecl { name: stringify!($name), place: $place, width: <$ty as ReadAs>::WIDTH },
            )*];

            /// Each field's value from `lookup`, in declaration order.
            pub fn resolve<E>(mut lookup: impl FnMut(&FieldDecl) -> Result<u32, E>) -> Result<Offsets, E> {
                let mut fields = Self::FIELDS.iter();
                Ok(Offsets { $( $name: Field::at(lookup(fields.next().unwrap())?), )* })
            }
        }

        impl Default for Offsets {
            fn default() -> Self {
                Self::ZERO
            }
        }
    };
}

/// A [`Place::Member`]: `member!("struct" "path")`, alternatives after commas.
macro_rules! member {
    ($($strukt:literal $path:literal),+) => { Place::Member(&[$(($strukt, $path)),+]) };
}

kernel_fields! {
    /// The keepalive timer inside the socket: `sock.sk_timer` upstream; some stable kernels
    /// (Debian's 6.1.1xx) moved it to `inet_connection_sock.icsk_keepalive_timer`, next to
    /// an MPTCP timer, and left sk_timer to MPTCP.
    sk_timer: Embedded = member!("inet_connection_sock" "icsk_keepalive_timer", "sock" "sk_timer");
    family: u16 = member!("sock" "__sk_common.skc_family");
    state: u8 = member!("sock" "__sk_common.skc_state");
    /// `skc_num`: the local port for request and timewait sockets.
    num: u16 = member!("sock" "__sk_common.skc_num");
    /// `inet_sock.inet_sport`: the local port of full sockets, kept after unhashing.
    inet_sport: u16 = member!("inet_sock" "inet_sport");
    dport: u16 = member!("sock" "__sk_common.skc_dport");
    rcv_saddr: u32 = member!("sock" "__sk_common.skc_rcv_saddr");
    daddr: u32 = member!("sock" "__sk_common.skc_daddr");
    v6_rcv_saddr: [u8; 16] = member!("sock" "__sk_common.skc_v6_rcv_saddr");
    v6_daddr: [u8; 16] = member!("sock" "__sk_common.skc_v6_daddr");
    net: Pointer = member!("sock" "__sk_common.skc_net.net");
    cookie: u64 = member!("sock" "__sk_common.skc_cookie");
    protocol: u16 = member!("sock" "sk_protocol");
    sk_flags: u64 = member!("sock" "__sk_common.skc_flags");
    sk_err: i32 = member!("sock" "sk_err");
    sk_lingertime: u64 = member!("sock" "sk_lingertime");
    /// `sock.sk_socket`, `socket_alloc.vfs_inode` and `inode.i_ino`: the file inode.
    sk_socket: Pointer = member!("sock" "sk_socket");
    socket_inode: Embedded = member!("socket_alloc" "vfs_inode");
    inode_ino: u64 = member!("inode" "i_ino");
    /// Bit number of SOCK_LINGER in `sk_flags`.
    linger_bit: EnumValue = Place::EnumMember("sock_flags", "SOCK_LINGER");
    /// Bit number of SOCK_KEEPOPEN in `sk_flags`.
    keepopen_bit: EnumValue = Place::EnumMember("sock_flags", "SOCK_KEEPOPEN");
    probes_out: u8 = member!("inet_connection_sock" "icsk_probes_out");
    retransmits: u8 = member!("inet_connection_sock" "icsk_retransmits");
    user_timeout: u32 = member!("inet_connection_sock" "icsk_user_timeout");
    keepalive_time: u32 = member!("tcp_sock" "keepalive_time");
    keepalive_intvl: u32 = member!("tcp_sock" "keepalive_intvl");
    keepalive_probes: u8 = member!("tcp_sock" "keepalive_probes");
    net_inum: u32 = member!("net" "ns.inum");
    net_keepalive_time: i32 = member!("net" "ipv4.sysctl_tcp_keepalive_time");
    net_keepalive_intvl: i32 = member!("net" "ipv4.sysctl_tcp_keepalive_intvl");
    net_keepalive_probes: u8 = member!("net" "ipv4.sysctl_tcp_keepalive_probes");
    timer_function: Pointer = member!("timer_list" "function");
    skb_head: Pointer = member!("sk_buff" "head");
    skb_network_header: u16 = member!("sk_buff" "network_header");
    skb_transport_header: u16 = member!("sk_buff" "transport_header");
    /// `sk_buff.dev`, and `net_device.nd_net.net`: the namespace a packet arrived in.
    skb_dev: Pointer = member!("sk_buff" "dev");
    dev_net: Pointer = member!("net_device" "nd_net.net");
    /// `sk_buff.sk`: the socket a packet belongs to, once the kernel knows it.
    skb_sk: Pointer = member!("sk_buff" "sk");
}

/// Read-only global the user side fills before loading the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Address of `tcp_keepalive_timer` (from /proc/kallsyms): the timer filter.
    pub keepalive_timer_fn: u64,
    pub offsets: Offsets,
    /// Only sockets with this local or remote port; 0 for all.
    pub filter_port: u16,
    /// 1 when `tcp:tcp_send_reset` carries a reason argument (Linux 6.10 and later).
    pub send_reset_has_reason: u8,
    /// 1 in kprobe mode: the tcp_send_active_reset kprobe reports resets sent by sockets,
    /// and the tracepoint only those that answer a packet.
    pub resets_by_kprobe: u8,
    /// Only sockets in this network namespace (inode number); 0 for all.
    pub filter_netns: u32,
    /// Wake the reader once this many bytes wait in the ring buffer (it also polls).
    pub wakeup_bytes: u32,
    /// Which argument of `tcp_send_active_reset()` is its reason (2 from Linux 6.10, 1 once
    /// the priority argument went); 0 when it takes none.
    pub active_reset_reason_arg: u8,
    /// 1 to report every TCP state change and every socket freed; 0 reports only the
    /// transitions diagnosis uses (connect, established, close, the end), which keeps
    /// short-lived connections cheap.
    pub all_states: u8,
    /// 1 to send every connection's end. 0 sends only ends of interest and counts the
    /// ordinary ones in ORDINARY_ENDS: an orderly close (from LAST_ACK, FIN_WAIT1/2 or
    /// CLOSING) of a connection whose start was seen less than `min_life_ns` before, with
    /// no reset sent or received, no error, no retransmission and keepalive never seen on.
    /// A listener closing is no connection's end.
    pub all_ends: u8,
    pub _pad: [u8; 5],
    /// An orderly end of a connection that lived at least this long is of interest.
    pub min_life_ns: u64,
    /// `SKB_DROP_REASON_NO_SOCKET` on this kernel (from BTF; 0 when unknown): a packet no
    /// socket took is no followed connection's, and floods of them are the usual drops.
    pub drop_reason_no_socket: u32,
    /// `SKB_DROP_REASON_TCP_OLD_SEQUENCE` (0 when unknown): how a host's TCP drops every
    /// keepalive probe it receives, after answering it; keepalive at work, not a fault.
    pub drop_reason_old_sequence: u32,
    /// 1 when `skb:kfree_skb` names the socket that was receiving the packet (`rx_sk`,
    /// Linux 6.13 and later): how a drop inside TCP, where the packet has no device or
    /// socket left, is told to be a followed connection's.
    pub kfree_skb_rx_sk: u32,
    pub _pad2: u32,
}

impl KernelConfig {
    pub const fn zeroed() -> Self {
        // SAFETY: plain integers and arrays (and offsets, which are integers), valid as zeros.
        unsafe { core::mem::zeroed() }
    }
}

/// Settings of `keepalive enforce`, read by its sock_ops program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnforceConfig {
    /// Seconds, as setsockopt takes them.
    pub idle_s: u32,
    pub interval_s: u32,
    pub count: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 to leave it.
    pub user_timeout_ms: u32,
    /// The same in jiffies, for the records (which carry jiffies like the tracer's).
    pub idle_jiffies: u32,
    pub interval_jiffies: u32,
    /// Only connections with this local or remote port; 0 for all.
    pub port: u16,
    /// 1: also change sockets that turned keepalive on themselves.
    pub force: u8,
    /// 1: change nothing, report what would change.
    pub dry_run: u8,
    /// Only connections with this remote or local address (`addr_family` 0 for any).
    pub addr: [u8; 16],
    pub addr_family: u16,
    pub _pad: [u8; 6],
}

impl EnforceConfig {
    pub const fn zeroed() -> Self {
        // SAFETY: plain integers and arrays, valid as zeros.
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integers and arrays, no padding the kernel could leave unset
    // that we would interpret, valid for any bit pattern.
    unsafe impl aya::Pod for super::Record {}
    unsafe impl aya::Pod for super::LifeRecord {}
    unsafe impl aya::Pod for super::Life {}
    unsafe impl aya::Pod for super::KernelConfig {}
    unsafe impl aya::Pod for super::EnforceConfig {}
}

// The kernel side writes a command name into a record as two words.
const _: () = assert!(core::mem::offset_of!(Record, comm) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Record>() == 8);
// ... and zeroes a record a word at a time.
const _: () = assert!(Record::SIZE.is_multiple_of(8));
// ... and a Life, in place, the same way.
const _: () = assert!(core::mem::size_of::<Life>().is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(Life, comm) % 8 == 0);

//! The running kernel's BTF, read here and nowhere else: struct layouts, so the kernel
//! programs read the right bytes on any kernel without hard-coded offsets, the enums and
//! tracepoint arguments that say what this kernel offers, and aya's parse of the same bytes,
//! which the loader needs to attach BTF tracepoints (aya's types are its own, so the
//! lookups above use btf_rs).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use keepalive_common::{FieldDecl, Offsets, Place};

pub const DEFAULT_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// What the kernel programs need to know about this kernel's types.
#[derive(Debug, Clone)]
pub struct KernelTypes {
    pub offsets: Offsets,
    /// `enum sk_rst_reason` names by value, without the `SK_RST_REASON_` prefix.
    pub reset_reasons: Vec<(u32, String)>,
    /// `tcp:tcp_send_reset` passes a reason (Linux 6.10 and later).
    pub send_reset_has_reason: bool,
    /// `enum skb_drop_reason` names by value, without the `SKB_DROP_REASON_` prefix; empty
    /// when `skb:kfree_skb` passes no reason (before Linux 5.17).
    pub drop_reasons: Vec<(u32, String)>,
    /// `skb:kfree_skb` passes the receiving socket (Linux 6.13 and later).
    pub kfree_skb_has_rx_sk: bool,
    /// Which argument of `tcp_send_active_reset()` (from 0) is its reason: 2 from Linux
    /// 6.10, 1 once the priority argument went; 0 when it takes none.
    pub active_reset_reason_arg: u8,
    /// The same BTF as aya reads it, for attaching BTF tracepoints.
    pub for_loader: std::sync::Arc<aya::Btf>,
}

impl KernelTypes {
    /// `tcp_send_active_reset()` takes a reason (Linux 6.10 and later).
    pub fn active_reset_has_reason(&self) -> bool {
        self.active_reset_reason_arg != 0
    }

    /// `skb:kfree_skb` says why the kernel drops a packet (Linux 5.17 and later).
    pub fn has_drop_reasons(&self) -> bool {
        !self.drop_reasons.is_empty()
    }

    /// The value of drop reason `name` (without its prefix) on this kernel; 0 when it has
    /// none (0 is never a drop's reason: SKB_NOT_DROPPED_YET).
    pub fn drop_reason(&self, name: &str) -> u32 {
        self.drop_reasons
            .iter()
            .find(|(_, n)| n == name)
            .map_or(0, |(v, _)| *v)
    }
}

pub fn load(path: &Path) -> Result<KernelTypes> {
    let unreadable = |e: &dyn std::fmt::Display| {
        anyhow!(
            "cannot read kernel BTF from {}: {e}; tracepoint mode needs it for struct layouts \
             and BTF tracepoints, so nothing can be traced (kernels need \
             CONFIG_DEBUG_INFO_BTF=y)",
            path.display()
        )
    };
    // Worded as btf_rs words a file it cannot open.
    let bytes = std::fs::read(path).map_err(|e| unreadable(&format!("i/o error: {e}")))?;
    let btf = Btf::from_bytes(&bytes).map_err(|e| unreadable(&e))?;
    let for_loader =
        aya::Btf::parse(&bytes, aya::Endianness::default()).map_err(|e| unreadable(&e))?;
    let types = Types(&btf);
    let offsets = Offsets::resolve(|field| types.resolve(field))?;
    let reset_reasons = types
        .enum_members("sk_rst_reason")
        .unwrap_or_default()
        .into_iter()
        .map(|(name, v)| (v, name.trim_start_matches("SK_RST_REASON_").to_string()))
        .collect();
    // btf_trace_<tp> is a pointer to the probe's prototype: (void *data, sk, skb[, reason]).
    let send_reset_has_reason = types.tracepoint_arity("tcp_send_reset")? >= 4;
    // (void *data, skb, location, reason[, rx_sk]): the reason from 5.17, rx_sk from 6.13.
    let kfree_skb_arity = types.tracepoint_arity("kfree_skb").unwrap_or(0);
    let kfree_skb_has_rx_sk = kfree_skb_arity >= 5;
    let drop_reasons = if kfree_skb_arity >= 4 {
        types
            .enum_members("skb_drop_reason")
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| (v, name.trim_start_matches("SKB_DROP_REASON_").to_string()))
            .collect()
    } else {
        vec![]
    };
    // (sk, priority, reason) from 6.10; (sk, reason) since the priority went (6.18 stable).
    let active_reset_reason_arg = types
        .parameter_index("tcp_send_active_reset", "reason")
        .ok()
        .flatten()
        .map_or(0, |i| i as u8);
    Ok(KernelTypes {
        offsets,
        reset_reasons,
        send_reset_has_reason,
        drop_reasons,
        kfree_skb_has_rx_sk,
        active_reset_reason_arg,
        for_loader: std::sync::Arc::new(for_loader),
    })
}

struct Types<'a>(&'a Btf);

impl Types<'_> {
    /// Where `field` is on this kernel: the first of its places BTF has.
    fn resolve(&self, field: &FieldDecl) -> Result<u32> {
        match field.place {
            Place::EnumMember(name, member) => self.enum_value(name, member),
            Place::Member(places) => {
                let mut found = Err(anyhow!("no place declared"));
                for (strukt, path) in places {
                    found = self.offset(strukt, path, field.width);
                    if found.is_ok() {
                        break;
                    }
                }
                found
            }
        }
        .with_context(|| format!("kernel field `{}`", field.name))
    }

    fn named(&self, name: &str, want: fn(&Type) -> bool) -> Result<Type> {
        self.0
            .resolve_types_by_name(name)
            .ok()
            .and_then(|ts| ts.into_iter().find(want))
            .ok_or_else(|| anyhow!("type `{name}` not found in kernel BTF"))
    }

    fn strip(&self, mut t: Type) -> Result<Type> {
        loop {
            t = match t {
                Type::Typedef(ref x) => self.0.resolve_chained_type(x)?,
                Type::Const(ref x) | Type::Volatile(ref x) | Type::Restrict(ref x) => {
                    self.0.resolve_chained_type(x)?
                }
                Type::TypeTag(ref x) => self.0.resolve_chained_type(x)?,
                other => return Ok(other),
            }
        }
    }

    fn size_of(&self, t: &Type) -> Result<usize> {
        Ok(match self.strip(t.clone())? {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => a.len() * self.size_of(&self.0.resolve_chained_type(&a)?)?,
            other => bail!("no size for BTF {}", other.name()),
        })
    }

    /// Byte offset of `path` (dot-separated members, looking through anonymous structs and
    /// unions) inside `struct name`, checking the field's size when given.
    fn offset(&self, name: &str, path: &str, size: Option<usize>) -> Result<u32> {
        let mut t = self.named(name, |t| matches!(t, Type::Struct(_)))?;
        let mut bits = 0u32;
        for part in path.split('.') {
            let (off, member_type) = self
                .find_member(&t, part)?
                .ok_or_else(|| anyhow!("kernel BTF: `struct {name}` has no member `{path}`"))?;
            bits += off;
            t = member_type;
        }
        if !bits.is_multiple_of(8) {
            bail!("kernel BTF: `struct {name}.{path}` is a bit field");
        }
        if let Some(want) = size {
            let got = self.size_of(&t)?;
            if got != want {
                bail!("kernel BTF: `struct {name}.{path}` is {got} bytes, expected {want}");
            }
        }
        Ok(bits / 8)
    }

    /// Finds member `name` of a struct or union, descending into anonymous members.
    /// Returns its bit offset and type.
    fn find_member(&self, t: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let (Type::Struct(s) | Type::Union(s)) = self.strip(t.clone())? else {
            return Ok(None);
        };
        for m in &s.members {
            let member_name = self.0.resolve_name(m).unwrap_or_default();
            let member_type = self.0.resolve_chained_type(m)?;
            if member_name == name {
                return Ok(Some((m.bit_offset(), member_type)));
            }
            if member_name.is_empty()
                && let Some((off, ty)) = self.find_member(&member_type, name)?
            {
                return Ok(Some((m.bit_offset() + off, ty)));
            }
        }
        Ok(None)
    }

    fn enum_members(&self, name: &str) -> Result<Vec<(String, u32)>> {
        let Type::Enum(e) = self.named(name, |t| matches!(t, Type::Enum(_)))? else {
            unreachable!()
        };
        e.members
            .iter()
            .map(|m| Ok((self.0.resolve_name(m)?, m.val())))
            .collect()
    }

    fn enum_value(&self, name: &str, member: &str) -> Result<u32> {
        self.enum_members(name)?
            .into_iter()
            .find(|(n, _)| n == member)
            .map(|(_, v)| v)
            .with_context(|| format!("kernel BTF: `enum {name}` has no `{member}`"))
    }

    /// Which argument of `function` is called `name` (from 0), if any.
    fn parameter_index(&self, function: &str, name: &str) -> Result<Option<usize>> {
        let Type::Func(f) = self.named(function, |t| matches!(t, Type::Func(_)))? else {
            unreachable!()
        };
        match self.strip(self.0.resolve_chained_type(&f)?)? {
            Type::FuncProto(p) => Ok(p
                .parameters
                .iter()
                .position(|a| self.0.resolve_name(a).is_ok_and(|n| n == name))),
            _ => bail!("kernel BTF: `{function}` has no prototype"),
        }
    }

    fn tracepoint_arity(&self, tracepoint: &str) -> Result<usize> {
        let name = format!("btf_trace_{tracepoint}");
        let t = self.named(&name, |t| matches!(t, Type::Typedef(_)))?;
        let Type::Ptr(p) = self.strip(t)? else {
            bail!("kernel BTF: `{name}` is not a function pointer");
        };
        match self.strip(self.0.resolve_chained_type(&p)?)? {
            Type::FuncProto(f) => Ok(f.parameters.len()),
            _ => bail!("kernel BTF: `{name}` is not a function pointer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF (present on every machine this project supports) and
    /// checks layouts that have been stable for years.
    #[test]
    fn resolves_this_kernels_layouts() {
        let path = Path::new(DEFAULT_BTF_PATH);
        // keepalive needs kernel BTF anyway: a machine without it cannot run the suite.
        assert!(
            path.exists(),
            "{DEFAULT_BTF_PATH} is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)"
        );
        let k = load(path).unwrap();
        // struct sock starts with sock_common, whose address pair comes first.
        assert_eq!(k.offsets.daddr.value, 0);
        assert_eq!(k.offsets.rcv_saddr.value, 4);
        assert!(k.offsets.sk_timer.value > k.offsets.v6_daddr.value);
        assert!(k.offsets.keepalive_time.value > k.offsets.probes_out.value);
        assert!(k.reset_reasons.is_empty() || k.send_reset_has_reason);
        // Every kernel this suite runs on (5.17+) names its drops.
        assert!(k.drop_reasons.iter().any(|(_, n)| n == "NETFILTER_DROP"));
        assert_eq!(k.active_reset_has_reason(), k.send_reset_has_reason);
        // sk comes first; the reason is the second or third argument.
        assert!(!k.active_reset_has_reason() || matches!(k.active_reset_reason_arg, 1 | 2));
        if k.send_reset_has_reason {
            assert!(
                k.reset_reasons
                    .iter()
                    .any(|(_, n)| n == "TCP_ABORT_ON_LINGER")
            );
        }
    }
}

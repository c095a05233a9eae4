//! Where the programs find a socket's cgroup in kernel memory: member
//! offsets of `struct sock`, `struct cgroup` and `struct kernfs_node`, read
//! from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), so one build
//! of the programs reads them right on every kernel.
//!
//! Only what that needs of the BTF format is parsed here: the header, the
//! string section and the type records (every kind's record length, and the
//! members of structs and unions).

use std::{collections::HashMap, fmt, fs, path::Path};

use geowall_common::KernelOffsets;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why the offsets could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfError(String);

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BtfError {}

fn err(msg: impl Into<String>) -> BtfError {
    BtfError(msg.into())
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    ty: u32,
    /// Bit offset from the start of the enclosing struct or union.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// Size (structs, unions, ints) or referenced type (pointers, typedefs,
    /// modifiers).
    size_or_type: u32,
    members: Vec<Member>,
}

/// The parsed types of one BTF blob.
#[derive(Debug)]
pub struct Btf {
    /// Index `id - 1`.
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| err(format!("truncated at byte {at}")))
}

impl Btf {
    /// Parses a little-endian BTF blob (what the kernel exports).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < 24 {
            return Err(err("shorter than a BTF header"));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(err(format!(
                "bad magic {magic:#06x} (not little-endian BTF)"
            )));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= data.len() => Ok(&data[s..e]),
                _ => Err(err(format!("{what} section runs past the end"))),
            }
        };
        let types_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let name_at = |off: u32| -> Result<String, BtfError> {
            let tail = strings
                .get(off as usize..)
                .ok_or_else(|| err(format!("name offset {off} past the strings")))?;
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
        };

        let mut types = Vec::new();
        let mut structs = HashMap::new();
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(types_data, m + 8)?;
                        members.push(Member {
                            name: name_at(u32_at(types_data, m)?)?,
                            ty: u32_at(types_data, m + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                other => {
                    return Err(err(format!(
                        "type {} has unknown kind {other}",
                        types.len() + 1
                    )));
                }
            };
            at += extra;
            if at > types_data.len() {
                return Err(err(format!("type {} runs past the end", types.len() + 1)));
            }
            let name = if name_off == 0 {
                String::new()
            } else {
                name_at(name_off)?
            };
            let id = types.len() as u32 + 1;
            // The first definition of a name with members wins (an empty
            // one is a stand-in).
            if kind == KIND_STRUCT && !name.is_empty() {
                let known = structs
                    .get(&name)
                    .and_then(|&k: &u32| types.get(k as usize - 1))
                    .is_some_and(|t: &Type| !t.members.is_empty());
                if !known {
                    structs.insert(name.clone(), id);
                }
            }
            types.push(Type {
                kind,
                name,
                size_or_type,
                members,
            });
        }
        Ok(Btf { types, structs })
    }

    /// Reads and parses a BTF file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = fs::read(path).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        Btf::parse(&data).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        id.checked_sub(1).and_then(|i| self.types.get(i as usize))
    }

    /// `id` with typedefs and qualifiers peeled off.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset and type of member `name` of the struct or union `t`,
    /// looking into anonymous members.
    fn member(&self, t: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name == name {
                return Some((m.bit_offset, m.ty));
            }
            if m.name.is_empty() {
                let inner = self.resolve(m.ty)?;
                if let Some((off, ty)) = self.member(inner, name, depth + 1) {
                    return Some((m.bit_offset + off, ty));
                }
            }
        }
        None
    }

    /// Byte offset of `path` (members, each of the previous one's type)
    /// inside `struct root`, and the final member's type.
    fn offset_of(&self, root: &str, path: &[&str]) -> Result<(u32, &Type), BtfError> {
        let id = *self
            .structs
            .get(root)
            .ok_or_else(|| err(format!("no struct {root}")))?;
        let mut t = self
            .ty(id)
            .ok_or_else(|| err(format!("struct {root}: bad type id")))?;
        let mut bits = 0;
        let mut walked = root.to_string();
        for name in path {
            if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
                return Err(err(format!("{walked} is not a struct")));
            }
            let (off, ty) = self
                .member(t, name, 0)
                .ok_or_else(|| err(format!("{walked} has no member {name}")))?;
            walked = format!("{walked}.{name}");
            bits += off;
            t = self
                .resolve(ty)
                .ok_or_else(|| err(format!("{walked}: bad type id {ty}")))?;
        }
        if bits % 8 != 0 {
            return Err(err(format!("{walked} is a bit field")));
        }
        Ok((bits / 8, t))
    }

    /// Like [`Btf::offset_of`], checking the member is a pointer or an
    /// integer of `int_size` bytes.
    fn field(&self, root: &str, path: &[&str], want: Want) -> Result<u32, BtfError> {
        let (off, t) = self.offset_of(root, path)?;
        let ok = match want {
            Want::Pointer => t.kind == KIND_PTR,
            Want::Int(size) => t.kind == KIND_INT && t.size_or_type == size,
            Want::Any => true,
        };
        if !ok {
            return Err(err(format!(
                "{root}.{} is not {want} (kind {}, {})",
                path.join("."),
                t.kind,
                t.name
            )));
        }
        Ok(off)
    }

    /// The offsets the programs need to find a socket's cgroup.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            enabled: 1,
            sock_cgroup: self.field("sock", &["sk_cgrp_data", "cgroup"], Want::Pointer)?,
            cgroup_kn: self.field("cgroup", &["kn"], Want::Pointer)?,
            kn_id: self.field("kernfs_node", &["id"], Want::Int(8))?,
            cgroup_parent: self.field("cgroup", &["self", "parent"], Want::Pointer)?,
            cgroup_self: self.field("cgroup", &["self"], Want::Any)?,
            cgroup_level: self.field("cgroup", &["level"], Want::Int(4))?,
            _pad: 0,
        })
    }
}

#[derive(Clone, Copy)]
enum Want {
    Pointer,
    Int(u32),
    Any,
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Pointer => f.write_str("a pointer"),
            Want::Int(n) => write!(f, "a {}-bit integer", n * 8),
            Want::Any => f.write_str("a member"),
        }
    }
}

/// The kernel's lockdown mode forbids programs to read kernel memory
/// (`confidentiality`: `bpf_probe_read_kernel` is refused).
pub fn lockdown_forbids_reads(lockdown: &str) -> bool {
    lockdown.contains("[confidentiality]")
}

/// The offsets for the running kernel, or why the programs must do without
/// (they then judge a socket by its callers' policies alone).
pub fn running_kernel_offsets() -> Result<KernelOffsets, BtfError> {
    if let Ok(mode) = fs::read_to_string("/sys/kernel/security/lockdown")
        && lockdown_forbids_reads(&mode)
    {
        return Err(err(
            "the kernel is locked down (confidentiality): programs may not read kernel memory",
        ));
    }
    Btf::from_file(Path::new("/sys/kernel/btf/vmlinux"))?.kernel_offsets()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob builder for the tests: types in order, names interned.
    #[derive(Default)]
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Blob {
        fn new() -> Self {
            Blob {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }

        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, size: u32) -> u32 {
            let n = self.name(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for w in [n, info, size] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, false, bytes);
            self.types.extend_from_slice(&(bytes * 8).to_le_bytes());
            id
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.head("", KIND_PTR, 0, false, to)
        }

        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.head(name, kind, members.len() as u32, false, size);
            for (m, ty, bits) in members {
                let n = self.name(m);
                for w in [n, *ty, *bits] {
                    self.types.extend_from_slice(&w.to_le_bytes());
                }
            }
            id
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// The shape of the kernel's structs, at made-up offsets; `kn.id` sits in
    /// an anonymous union as in some kernels.
    fn kernel_like() -> Vec<u8> {
        let mut b = Blob::new();
        let u64t = b.int("u64", 8);
        let int = b.int("int", 4);
        let kn = b.composite(KIND_UNION, "", 8, &[("id", u64t, 0)]);
        let kernfs = b.composite(
            KIND_STRUCT,
            "kernfs_node",
            128,
            &[("count", int, 0), ("", kn, 64 * 8)],
        );
        let kernfs_ptr = b.ptr(kernfs);
        // `struct cgroup` forward use: pointer first, struct later.
        let css = b.composite(KIND_STRUCT, "cgroup_subsys_state", 200, &[]);
        let css_ptr = b.ptr(css);
        let css_real = b.composite(
            KIND_STRUCT,
            "cgroup_subsys_state",
            200,
            &[("cgroup", u64t, 0), ("parent", css_ptr, 120 * 8)],
        );
        let cgroup = b.composite(
            KIND_STRUCT,
            "cgroup",
            1000,
            &[
                ("self", css_real, 0),
                ("level", int, 212 * 8),
                ("kn", kernfs_ptr, 296 * 8),
            ],
        );
        let cgroup_ptr = b.ptr(cgroup);
        let scd = b.composite(
            KIND_STRUCT,
            "sock_cgroup_data",
            16,
            &[("cgroup", cgroup_ptr, 0), ("classid", int, 64)],
        );
        b.composite(
            KIND_STRUCT,
            "sock",
            1200,
            &[("sk_mark", int, 0), ("sk_cgrp_data", scd, 672 * 8)],
        );
        b.bytes()
    }

    #[test]
    fn offsets_come_from_the_members_and_their_anonymous_unions() {
        let btf = Btf::parse(&kernel_like()).unwrap();
        let off = btf.kernel_offsets().unwrap();
        assert_eq!(
            off,
            KernelOffsets {
                enabled: 1,
                sock_cgroup: 672,
                cgroup_kn: 296,
                kn_id: 64,
                cgroup_parent: 120,
                cgroup_self: 0,
                cgroup_level: 212,
                _pad: 0,
            }
        );
    }

    #[test]
    fn a_missing_member_is_named() {
        let mut b = Blob::new();
        let int = b.int("int", 4);
        b.composite(KIND_STRUCT, "sock", 8, &[("sk_mark", int, 0)]);
        let e = Btf::parse(&b.bytes())
            .unwrap()
            .kernel_offsets()
            .unwrap_err();
        assert_eq!(e.to_string(), "sock has no member sk_cgrp_data");
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error_not_a_panic() {
        let blob = kernel_like();
        for cut in [0, 10, 24, 40, blob.len() - 3] {
            assert!(Btf::parse(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = blob.clone();
        bad[0] = 0;
        assert!(Btf::parse(&bad).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn the_running_kernels_btf_has_every_offset() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("no {}: skipped", path.display());
            return;
        }
        let off = Btf::from_file(path).unwrap().kernel_offsets().unwrap();
        assert_eq!(off.enabled, 1);
        assert!(off.sock_cgroup > 0 && off.cgroup_kn > 0 && off.kn_id > 0);
    }

    #[test]
    fn only_confidentiality_lockdown_forbids_reads() {
        assert!(!lockdown_forbids_reads(
            "[none] integrity confidentiality\n"
        ));
        assert!(!lockdown_forbids_reads(
            "none [integrity] confidentiality\n"
        ));
        assert!(lockdown_forbids_reads("none integrity [confidentiality]\n"));
    }
}

//! Device access of unprivileged containers: one allowlist ([`DEFAULT_ALLOWED`]: containerd's and
//! runc's default device rules without their wildcard mknod rule), enforced by the device
//! controller in both cgroup versions.
//!
//! * cgroup v1: the container's `devices` cgroup gets `devices.deny` `a`, then one
//!   `devices.allow` line per rule ([`v1_allow_lines`]).
//! * cgroup v2 has no device files: as runc and youki do, a `BPF_PROG_TYPE_CGROUP_DEVICE` program
//!   ([`program`], hand-assembled eBPF) is loaded with `bpf(BPF_PROG_LOAD)` and attached to the
//!   container's cgroup directory with `bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)` ([`attach`]).
//!   The kernel runs it on every open and mknod of a device node (and it also applies on hybrid
//!   hosts, for processes in the cgroup2 hierarchy's cgroup).
//!
//! Everything not on the list is refused with EPERM: opening any other device node and mknod of
//! any other device. Privileged containers are not restricted (as upstream).

use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("failed to open cgroup {path} for the device program: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "failed to load the cgroup device BPF program (the kernel needs CONFIG_CGROUP_BPF and \
         CAP_SYS_ADMIN or CAP_BPF): {source}{}",
        if log.is_empty() { String::new() } else { format!("; verifier log: {log}") }
    )]
    Load { source: std::io::Error, log: String },
    #[error("failed to attach the device BPF program to cgroup {path}: {source}")]
    Attach {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    Char,
    /// No default rule allows a block device; both encodings (v1 lines, the v2 program) and the
    /// tests handle it, so a rule for one is a data change.
    #[cfg_attr(not(test), allow(dead_code))]
    Block,
}

/// Access bits, with the kernel's values (`BPF_DEVCG_ACC_*` in include/uapi/linux/bpf.h).
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One allowed device (or a whole major with `minor: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DevKind,
    pub major: u32,
    /// None: any minor.
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u8,
}

const fn chr(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        kind: DevKind::Char,
        major,
        minor,
        access: ACC_ALL,
    }
}

/// What every unprivileged container may open and mknod: containerd's/runc's defaults (null,
/// zero, full, random, urandom, tty, console, ptmx, the pts slaves) without their `c *:* m` and
/// `b *:* m` rules, so mknod of anything else is refused as well.
pub const DEFAULT_ALLOWED: &[DeviceRule] = &[
    chr(1, Some(3)), // /dev/null
    chr(1, Some(5)), // /dev/zero
    chr(1, Some(7)), // /dev/full
    chr(1, Some(8)), // /dev/random
    chr(1, Some(9)), // /dev/urandom
    chr(5, Some(0)), // /dev/tty
    chr(5, Some(1)), // /dev/console
    chr(5, Some(2)), // /dev/ptmx
    chr(136, None),  // /dev/pts/*
];

impl DeviceRule {
    /// Whether this rule allows `access` to the device.
    #[cfg(test)]
    pub fn allows(&self, kind: DevKind, major: u32, minor: u32, access: u8) -> bool {
        self.kind == kind
            && self.major == major
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }

    /// The rule in the v1 `devices.allow` format, e.g. `c 1:3 rwm`, `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DevKind::Char => 'c',
            DevKind::Block => 'b',
        };
        let minor = self.minor.map_or("*".to_string(), |m| m.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{kind} {}:{minor} {acc}", self.major)
    }
}

/// The `devices.allow` lines of a list (after `devices.deny` `a`), one write each.
pub fn v1_allow_lines(rules: &[DeviceRule]) -> Vec<String> {
    rules.iter().map(DeviceRule::v1_line).collect()
}

/// `struct bpf_insn` (include/uapi/linux/bpf.h): opcode, dst_reg:4 | src_reg:4, offset, imm.
/// libc 0.2 has no eBPF instruction type, only the classic `sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one (the bitfield order on little-endian
    /// hosts, which are the only ones this runs on: x86_64, aarch64).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    /// The instruction as the kernel reads it.
    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [self.code, self.regs, o[0], o[1], i[0], i[1], i[2], i[3]]
    }
}

// eBPF opcodes. The class/size/mode/op/source bits shared with classic BPF come from libc
// (linux/bpf_common.h); the eBPF-only ones are defined here from include/uapi/linux/bpf.h.
const BPF_ALU64: u8 = 0x07;
const BPF_MOV: u8 = 0xb0;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;
const C_LDX: u8 = libc::BPF_LDX as u8;
const C_MEM: u8 = libc::BPF_MEM as u8;
const C_W: u8 = libc::BPF_W as u8;
const C_JMP: u8 = libc::BPF_JMP as u8;
const C_AND: u8 = libc::BPF_AND as u8;
const C_RSH: u8 = libc::BPF_RSH as u8;
const C_K: u8 = libc::BPF_K as u8;
const C_X: u8 = libc::BPF_X as u8;

/// `rX = *(u32 *)(rY + off)`
const LDX_W: u8 = C_LDX | C_MEM | C_W;
const AND64_K: u8 = BPF_ALU64 | C_AND | C_K;
const RSH64_K: u8 = BPF_ALU64 | C_RSH | C_K;
const MOV64_K: u8 = BPF_ALU64 | BPF_MOV | C_K;
const MOV64_X: u8 = BPF_ALU64 | BPF_MOV | C_X;
const JNE_K: u8 = C_JMP | BPF_JNE | C_K;
const JNE_X: u8 = C_JMP | BPF_JNE | C_X;
const EXIT: u8 = C_JMP | BPF_EXIT;

/// `struct bpf_cgroup_dev_ctx` (include/uapi/linux/bpf.h): u32 access_type (access << 16 |
/// type), u32 major, u32 minor.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The device program for `rules` (what runc's devicefilter emits): r2 = type, r3 = access,
/// r4 = major, r5 = minor; per rule a block of tests that each jump past the block on a
/// mismatch, ending in `return 1` (allow); after the last block `return 0` (deny).
pub fn program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, CTX_ACCESS_TYPE, 0),
        insn(AND64_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, CTX_ACCESS_TYPE, 0),
        insn(RSH64_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, CTX_MAJOR, 0),
        insn(LDX_W, 5, 1, CTX_MINOR, 0),
    ];
    for r in rules {
        let kind = match r.kind {
            DevKind::Char => DEV_CHAR,
            DevKind::Block => DEV_BLOCK,
        };
        // (instruction, whether it is a test that jumps past the block on a mismatch)
        let mut block = vec![(insn(JNE_K, 2, 0, 0, kind), true)];
        if r.access & ACC_ALL != ACC_ALL {
            // r1 = access & allowed: a request with any other bit set differs from r3 (r1, the
            // ctx pointer, is no longer needed).
            block.push((insn(MOV64_X, 1, 3, 0, 0), false));
            block.push((insn(AND64_K, 1, 0, 0, i32::from(r.access)), false));
            block.push((insn(JNE_X, 1, 3, 0, 0), true));
        }
        block.push((insn(JNE_K, 4, 0, 0, r.major as i32), true));
        if let Some(m) = r.minor {
            block.push((insn(JNE_K, 5, 0, 0, m as i32), true));
        }
        block.push((insn(MOV64_K, 0, 0, 0, 1), false));
        block.push((insn(EXIT, 0, 0, 0, 0), false));
        // Jump offsets count from the next instruction.
        let len = block.len();
        for (j, (mut i, test)) in block.into_iter().enumerate() {
            if test {
                i.off = (len - j - 1) as i16;
            }
            p.push(i);
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program and attach types (include/uapi/linux/bpf.h; not in libc 0.2.191).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type` (the kernel
/// zero-fills the fields after what we pass).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, initialised bpf_attr member of the size passed; the kernel only
    // reads it (and writes into buffers it points at, which outlive the call).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the device program for `rules`; the fd holds it until attached.
pub fn load(rules: &[DeviceRule]) -> Result<OwnedFd, DeviceError> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"rktup_devices");
    let attr = |log: &mut Vec<u8>| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    let mut none = Vec::new();
    match bpf(BPF_PROG_LOAD, &mut attr(&mut none)) {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            // Again with the verifier's log, for the reason.
            let mut log = vec![0u8; 64 * 1024];
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr(&mut log)) {
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).trim().to_string();
            Err(DeviceError::Load { source, log })
        }
    }
}

/// Load the program for `rules` and attach it to the cgroup v2 directory `cgroup`. Without
/// `BPF_F_ALLOW_MULTI` (flags 0) a second attach (a restarted container's) replaces the first
/// program, and nothing can be attached below the container's cgroup. The attachment keeps the
/// program alive after our fds close; removing the cgroup releases it.
pub fn attach(cgroup: &Path, rules: &[DeviceRule]) -> Result<(), DeviceError> {
    let dir = std::fs::File::open(cgroup).map_err(|source| DeviceError::Open {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let prog = load(rules)?;
    let mut a = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|source| DeviceError::Attach {
        path: cgroup.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny interpreter for the opcodes [`program`] emits, to check what the program decides.
    fn run(p: &[BpfInsn], kind: i32, major: u32, minor: u32, access: u8) -> u64 {
        let ctx = [(u32::from(access) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1, "loads from the ctx only");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                AND64_K => r[dst] &= i.imm as i64 as u64,
                RSH64_K => r[dst] >>= i.imm,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                MOV64_X => r[dst] = r[src],
                JNE_K if r[dst] != i.imm as i64 as u64 => {
                    pc = (pc as i64 + i64::from(i.off)) as usize
                }
                JNE_X if r[dst] != r[src] => pc = (pc as i64 + i64::from(i.off)) as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("no exit");
    }

    fn bytes(p: &[BpfInsn]) -> Vec<[u8; 8]> {
        p.iter().map(|i| i.to_bytes()).collect()
    }

    #[test]
    fn program_bytes_for_the_default_allowlist() {
        let p = bytes(&program(DEFAULT_ALLOWED));
        // 6 loads, 8 rules of 5 instructions (type, major, minor, r0 = 1, exit), pts with 4
        // (no minor test), r0 = 0, exit.
        assert_eq!(p.len(), 6 + 8 * 5 + 4 + 2);
        let expect_head: [[u8; 8]; 11] = [
            [0x61, 0x12, 0, 0, 0, 0, 0, 0],       // r2 = *(u32 *)(r1 + 0)
            [0x57, 0x02, 0, 0, 0xff, 0xff, 0, 0], // r2 &= 0xffff
            [0x61, 0x13, 0, 0, 0, 0, 0, 0],       // r3 = *(u32 *)(r1 + 0)
            [0x77, 0x03, 0, 0, 16, 0, 0, 0],      // r3 >>= 16
            [0x61, 0x14, 4, 0, 0, 0, 0, 0],       // r4 = *(u32 *)(r1 + 4)
            [0x61, 0x15, 8, 0, 0, 0, 0, 0],       // r5 = *(u32 *)(r1 + 8)
            [0x55, 0x02, 4, 0, 2, 0, 0, 0],       // if r2 != 2 (char) goto +4
            [0x55, 0x04, 3, 0, 1, 0, 0, 0],       // if r4 != 1 goto +3
            [0x55, 0x05, 2, 0, 3, 0, 0, 0],       // if r5 != 3 goto +2
            [0xb7, 0x00, 0, 0, 1, 0, 0, 0],       // r0 = 1
            [0x95, 0x00, 0, 0, 0, 0, 0, 0],       // exit
        ];
        assert_eq!(p[..11], expect_head);
        let expect_tail: [[u8; 8]; 6] = [
            [0x55, 0x02, 3, 0, 2, 0, 0, 0],   // if r2 != 2 goto +3
            [0x55, 0x04, 2, 0, 136, 0, 0, 0], // if r4 != 136 goto +2 (any minor)
            [0xb7, 0x00, 0, 0, 1, 0, 0, 0],   // r0 = 1
            [0x95, 0x00, 0, 0, 0, 0, 0, 0],   // exit
            [0xb7, 0x00, 0, 0, 0, 0, 0, 0],   // r0 = 0
            [0x95, 0x00, 0, 0, 0, 0, 0, 0],   // exit
        ];
        assert_eq!(p[p.len() - 6..], expect_tail);
        // The middle blocks: the same shape with each rule's numbers.
        for (k, r) in DEFAULT_ALLOWED[..8].iter().enumerate() {
            let b = &p[6 + 5 * k..6 + 5 * k + 5];
            assert_eq!(b[0], [0x55, 0x02, 4, 0, 2, 0, 0, 0], "rule {k}");
            assert_eq!(b[1], [0x55, 0x04, 3, 0, r.major as u8, 0, 0, 0], "rule {k}");
            let m = r.minor.unwrap() as u8;
            assert_eq!(b[2], [0x55, 0x05, 2, 0, m, 0, 0, 0], "rule {k}");
            assert_eq!(b[3..], expect_head[9..], "rule {k}");
        }
    }

    #[test]
    fn program_decides_like_the_list() {
        let p = program(DEFAULT_ALLOWED);
        let allowed = |kind: DevKind, maj: u32, min: u32, acc: u8| {
            DEFAULT_ALLOWED
                .iter()
                .any(|r| r.allows(kind, maj, min, acc))
        };
        for (kind, k) in [(DevKind::Char, DEV_CHAR), (DevKind::Block, DEV_BLOCK)] {
            for major in [0, 1, 2, 4, 5, 7, 8, 10, 136, 137, 254] {
                for minor in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 77] {
                    for acc in [ACC_MKNOD, ACC_READ, ACC_WRITE, ACC_READ | ACC_WRITE] {
                        let want = u64::from(allowed(kind, major, minor, acc));
                        assert_eq!(
                            run(&p, k, major, minor, acc),
                            want,
                            "{kind:?} {major}:{minor} access {acc}"
                        );
                    }
                }
            }
        }
        // The issue's cases by name.
        assert_eq!(
            run(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE),
            1,
            "/dev/null"
        );
        assert_eq!(run(&p, DEV_CHAR, 136, 42, ACC_READ), 1, "/dev/pts/42");
        assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_MKNOD), 0, "mknod sda");
        assert_eq!(
            run(&p, DEV_BLOCK, 1, 3, ACC_READ),
            0,
            "a block 1:3 is not null"
        );
        assert_eq!(run(&p, DEV_CHAR, 1, 1, ACC_READ), 0, "/dev/mem");
        assert_eq!(run(&p, DEV_CHAR, 10, 200, ACC_READ), 0, "/dev/net/tun");
        // An empty list denies everything.
        assert_eq!(run(&program(&[]), DEV_CHAR, 1, 3, ACC_READ), 0);
    }

    #[test]
    fn partial_access_rules_check_the_access_bits() {
        let ro = [DeviceRule {
            kind: DevKind::Block,
            major: 7,
            minor: None,
            access: ACC_READ,
        }];
        let p = program(&ro);
        assert_eq!(run(&p, DEV_BLOCK, 7, 3, ACC_READ), 1);
        assert_eq!(run(&p, DEV_BLOCK, 7, 3, ACC_WRITE), 0);
        assert_eq!(run(&p, DEV_BLOCK, 7, 3, ACC_READ | ACC_WRITE), 0);
        assert_eq!(run(&p, DEV_BLOCK, 7, 3, ACC_MKNOD), 0);
        assert_eq!(run(&p, DEV_CHAR, 7, 3, ACC_READ), 0);
        assert_eq!(run(&p, DEV_BLOCK, 8, 3, ACC_READ), 0);
        assert_eq!(ro[0].v1_line(), "b 7:* r");
    }

    #[test]
    fn v1_lines_for_the_default_allowlist() {
        assert_eq!(
            v1_allow_lines(DEFAULT_ALLOWED),
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ]
        );
    }
}

//! The `RuntimeDefault` seccomp profile: a classic-BPF filter that lets every system call through
//! except those container runtimes' default profiles (Docker's, containerd's) refuse to
//! unprivileged containers — kernel modules, kexec, reboot, mounts and namespaces, keyrings, BPF,
//! perf, clock setting, swap, handle-based opens, other processes' memory — which fail with
//! EPERM. Calls from another ABI (i386 via int 0x80, x32) are refused as a whole, so the list
//! cannot be bypassed through different syscall numbers.
//!
//! Like Docker's profile it also inspects `clone`: a `clone` whose flags (arg0 on x86_64 and
//! aarch64) ask for a new namespace (CLONE_NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET,
//! NEWCGROUP) fails with EPERM, and `clone3`, whose flags live in memory a filter cannot read,
//! fails with ENOSYS so that libc falls back to `clone`, which it can. Plain fork and thread
//! creation keep working.

use libc::{sock_filter, sock_fprog};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// x32 system calls on x86_64 carry this bit in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const DENIED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
];

// Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in struct seccomp_data.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of args[0] (a u64 at offset 16; little-endian on x86_64 and aarch64).
#[cfg(target_endian = "little")]
const DATA_ARG0_LO: u32 = 16;

/// The namespace flags Docker's default profile refuses in `clone`'s flags: CLONE_NEWNS |
/// CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP.
pub const CLONE_NS_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;
const _: () = assert!(CLONE_NS_FLAGS == 0x7E02_0000);

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The filter program: arch check, x32 check, one comparison per denied call, the clone3 and
/// clone checks, then the returns:
///
/// ```text
///   ...  jeq <denied nr>            → deny
///   jeq clone3                      → enosys
///   jeq clone                       (else → allow)
///   ld args[0] (low 32 bits)
///   jset CLONE_NS_FLAGS             → deny (else → allow)
///   allow:  ret ALLOW
///   deny:   ret ERRNO(EPERM)
///   enosys: ret ERRNO(ENOSYS)
/// ```
pub fn runtime_default_program() -> Vec<sock_filter> {
    let deny = stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        // Native ABI: skip the deny that follows.
        jump(BPF_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        deny,
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(deny);
    }
    // Jump offsets count from the next instruction; with n comparisons starting at c0 the tail
    // is: c0+n clone3, +1 clone, +2 ld, +3 jset, +4 allow, +5 deny, +6 enosys.
    let n = DENIED.len();
    for (i, nr) in DENIED.iter().enumerate() {
        p.push(jump(BPF_JEQ_K, *nr as u32, (n + 4 - i) as u8, 0));
    }
    p.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 5, 0));
    p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 0, 2));
    p.push(stmt(BPF_LD_W_ABS, DATA_ARG0_LO));
    p.push(jump(BPF_JSET_K, CLONE_NS_FLAGS, 1, 0));
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(deny);
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    p
}

/// Installs the RuntimeDefault filter on the calling thread (inherited across fork and exec).
/// Needs no_new_privs or CAP_SYS_ADMIN, so callers install it before dropping capabilities.
pub fn install_runtime_default() -> std::io::Result<()> {
    install(&mut runtime_default_program())
}

/// Installs `prog` (allocates nothing: usable in a forked child).
fn install(prog: &mut [sock_filter]) -> std::io::Result<()> {
    let fprog = sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at a valid program that outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const sock_fprog,
            0,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_jumps_to_the_deny_and_everything_else_to_allow() {
        let p = runtime_default_program();
        let (allow, deny, enosys) = (p.len() - 3, p.len() - 2, p.len() - 1);
        assert_eq!((p[allow].code, p[allow].k), (BPF_RET_K, SECCOMP_RET_ALLOW));
        assert_eq!(p[deny].k, SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(p[enosys].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        let target = |at: usize, off: u8| at + 1 + off as usize;
        let first = allow - 4 - DENIED.len();
        for (i, nr) in DENIED.iter().enumerate() {
            let ins = &p[first + i];
            assert_eq!((ins.code, ins.k, ins.jf), (BPF_JEQ_K, *nr as u32, 0));
            assert_eq!(target(first + i, ins.jt), deny, "syscall {nr}");
        }
        // clone3 → ENOSYS.
        let c3 = first + DENIED.len();
        assert_eq!((p[c3].code, p[c3].k), (BPF_JEQ_K, libc::SYS_clone3 as u32));
        assert_eq!(
            (target(c3, p[c3].jt), target(c3, p[c3].jf)),
            (enosys, c3 + 1)
        );
        // clone → its flags; any other call → allow.
        let c = c3 + 1;
        assert_eq!((p[c].code, p[c].k), (BPF_JEQ_K, libc::SYS_clone as u32));
        assert_eq!((target(c, p[c].jt), target(c, p[c].jf)), (c + 1, allow));
        assert_eq!((p[c + 1].code, p[c + 1].k), (BPF_LD_W_ABS, DATA_ARG0_LO));
        let js = c + 2;
        assert_eq!((p[js].code, p[js].k), (BPF_JSET_K, 0x7E02_0000));
        assert_eq!((target(js, p[js].jt), target(js, p[js].jf)), (deny, allow));
        assert!(p.len() < 256, "jump offsets fit in a u8");
    }

    /// The filter for real, in a forked child (no_new_privs, so no root needed): clone with a
    /// namespace flag → EPERM, clone3 → ENOSYS, while fork and a flag-less clone still work.
    #[test]
    fn clone_namespace_flags_and_clone3_are_refused_fork_works() {
        let mut prog = runtime_default_program();
        // SAFETY: the child only makes raw system calls and _exits (no allocation, no locks).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: all calls below are plain system calls on valid arguments; every child
            // a successful clone creates exits at once.
            unsafe {
                let errno = || *libc::__errno_location();
                let reap = |p: libc::c_long| -> i32 {
                    let mut st = 0;
                    libc::waitpid(p as i32, &mut st, 0);
                    st
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || install(&mut prog).is_err()
                {
                    libc::_exit(10);
                }
                let flags = (libc::CLONE_NEWUTS | libc::SIGCHLD) as libc::c_ulong;
                let r = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
                if r == 0 {
                    libc::_exit(0);
                }
                if r > 0 {
                    reap(r);
                    libc::_exit(11);
                }
                if errno() != libc::EPERM {
                    libc::_exit(12);
                }
                let mut args: libc::clone_args = std::mem::zeroed();
                args.exit_signal = libc::SIGCHLD as u64;
                let r = libc::syscall(
                    libc::SYS_clone3,
                    &mut args as *mut libc::clone_args,
                    std::mem::size_of::<libc::clone_args>(),
                );
                if r == 0 {
                    libc::_exit(0);
                }
                if r > 0 {
                    reap(r);
                    libc::_exit(13);
                }
                if errno() != libc::ENOSYS {
                    libc::_exit(14);
                }
                let f = libc::fork();
                if f == 0 {
                    libc::_exit(7);
                }
                if f < 0 || libc::WEXITSTATUS(reap(f as libc::c_long)) != 7 {
                    libc::_exit(15);
                }
                let r = libc::syscall(
                    libc::SYS_clone,
                    libc::SIGCHLD as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                );
                if r == 0 {
                    libc::_exit(7);
                }
                if r < 0 || libc::WEXITSTATUS(reap(r)) != 7 {
                    libc::_exit(16);
                }
                libc::_exit(0);
            }
        }
        let code = crate::stage1::sys::wait_exit_code(pid);
        let why = match code {
            0 => "",
            10 => "installing the filter failed",
            11 => "clone(CLONE_NEWUTS) succeeded",
            12 => "clone(CLONE_NEWUTS) failed with another errno than EPERM",
            13 => "clone3 succeeded",
            14 => "clone3 failed with another errno than ENOSYS",
            15 => "fork did not work",
            16 => "clone without namespace flags did not work",
            _ => "the child died",
        };
        assert_eq!(code, 0, "{why} (exit code {code})");
    }
}

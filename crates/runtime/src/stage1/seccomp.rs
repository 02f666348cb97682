//! The `RuntimeDefault` seccomp profile: a classic-BPF filter that lets every system call through
//! except those container runtimes' default profiles (Docker's, containerd's) refuse to
//! unprivileged containers — kernel modules, kexec, reboot, mounts and namespaces, keyrings, BPF,
//! perf, clock setting, swap, handle-based opens, other processes' memory — which fail with
//! EPERM. Calls from another ABI (i386 via int 0x80, x32) are refused as a whole, so the list
//! cannot be bypassed through different syscall numbers.

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
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in struct seccomp_data.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

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

/// The filter program: arch check, x32 check, one comparison per denied call.
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
    // Each comparison jumps to the shared deny at the end on a match.
    let n = DENIED.len();
    for (i, nr) in DENIED.iter().enumerate() {
        let to_deny = (n - i) as u8; // the remaining comparisons, then the allow
        p.push(jump(BPF_JEQ_K, *nr as u32, to_deny, 0));
    }
    p.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    p.push(deny);
    p
}

/// Installs the RuntimeDefault filter on the calling thread (inherited across fork and exec).
/// Needs no_new_privs or CAP_SYS_ADMIN, so callers install it before dropping capabilities.
pub fn install_runtime_default() -> std::io::Result<()> {
    let mut prog = runtime_default_program();
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
        let allow = p.len() - 2;
        let deny = p.len() - 1;
        assert_eq!(p[allow].k, SECCOMP_RET_ALLOW);
        assert_eq!(p[deny].k, SECCOMP_RET_ERRNO | libc::EPERM as u32);
        let first = allow - DENIED.len();
        for (i, nr) in DENIED.iter().enumerate() {
            let ins = &p[first + i];
            assert_eq!((ins.code, ins.k, ins.jf), (BPF_JEQ_K, *nr as u32, 0));
            assert_eq!(first + i + 1 + ins.jt as usize, deny, "syscall {nr}");
        }
        assert!(p.len() < 256, "jump offsets fit in a u8");
    }
}

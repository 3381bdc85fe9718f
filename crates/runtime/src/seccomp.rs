//! A classic-BPF compiler for the runtime spec's `linux.seccomp` section.
//!
//! The program checks the architecture, then tests the rules in order (the first
//! matching rule's action wins) and falls back to the default action. Argument
//! conditions compare the full 64-bit value in two 32-bit halves.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator,
};

use crate::error::{Error, Result};
use crate::syscalls;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// A compiled filter, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProgram {
    insns: Vec<libc::sock_filter>,
    flags: u32,
}

impl SeccompProgram {
    /// The BPF instructions.
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    /// Loads the filter into the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
    pub fn install(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as u16,
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points to a valid program that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A jump target inside one rule: skip `n` instructions, or go to the next rule.
#[derive(Clone, Copy)]
enum J {
    Skip(u8),
    Fail,
}

enum Ins {
    Stmt(u16, u32),
    Jump(u16, u32, J, J),
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<u32> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            libc::SECCOMP_RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => {
            libc::SECCOMP_RET_ERRNO | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActTrace => {
            libc::SECCOMP_RET_TRACE | (errno.unwrap_or(libc::EPERM as u32) & 0xffff)
        }
        LinuxSeccompAction::ScmpActLog => libc::SECCOMP_RET_LOG,
        LinuxSeccompAction::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(format!(
                "{field}: SCMP_ACT_NOTIFY needs a listener, which is not supported"
            )))
        }
    })
}

/// Emits the checks of one argument condition: falls through when it holds, jumps to
/// the next rule when it does not.
fn arg_cond(out: &mut Vec<Ins>, a: &LinuxSeccompArg, field: &str) -> Result<()> {
    if a.index() > 5 {
        return Err(Error::Seccomp(format!(
            "{field}: argument index {} > 5",
            a.index()
        )));
    }
    let lo = OFF_ARGS + 8 * a.index() as u32;
    let hi = lo + 4;
    let (vhi, vlo) = ((a.value() >> 32) as u32, a.value() as u32);
    use Ins::{Jump, Stmt};
    use J::{Fail, Skip};
    let ld = |off| Stmt(BPF_LD_W_ABS, off);
    match a.op() {
        LinuxSeccompOperator::ScmpCmpEq => out.extend([
            ld(hi),
            Jump(BPF_JEQ_K, vhi, Skip(0), Fail),
            ld(lo),
            Jump(BPF_JEQ_K, vlo, Skip(0), Fail),
        ]),
        LinuxSeccompOperator::ScmpCmpNe => out.extend([
            ld(hi),
            Jump(BPF_JEQ_K, vhi, Skip(0), Skip(2)),
            ld(lo),
            Jump(BPF_JEQ_K, vlo, Fail, Skip(0)),
        ]),
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let want = a.value_two().unwrap_or(0);
            out.extend([
                ld(hi),
                Stmt(BPF_AND_K, vhi),
                Jump(BPF_JEQ_K, (want >> 32) as u32, Skip(0), Fail),
                ld(lo),
                Stmt(BPF_AND_K, vlo),
                Jump(BPF_JEQ_K, want as u32, Skip(0), Fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe => {
            let code = if a.op() == LinuxSeccompOperator::ScmpCmpGt {
                BPF_JGT_K
            } else {
                BPF_JGE_K
            };
            out.extend([
                ld(hi),
                Jump(BPF_JGT_K, vhi, Skip(3), Skip(0)),
                Jump(BPF_JEQ_K, vhi, Skip(0), Fail),
                ld(lo),
                Jump(code, vlo, Skip(0), Fail),
            ])
        }
        LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe => {
            // lo < v  <=>  !(lo >= v);  lo <= v  <=>  !(lo > v)
            let code = if a.op() == LinuxSeccompOperator::ScmpCmpLt {
                BPF_JGE_K
            } else {
                BPF_JGT_K
            };
            out.extend([
                ld(hi),
                Jump(BPF_JGT_K, vhi, Fail, Skip(0)),
                Jump(BPF_JEQ_K, vhi, Skip(0), Skip(2)),
                ld(lo),
                Jump(code, vlo, Fail, Skip(0)),
            ])
        }
    }
    Ok(())
}

/// Lays out one rule (body + `ret`), resolving `Fail` to "just past the ret".
fn layout(body: Vec<Ins>, ret: u32) -> Result<Vec<libc::sock_filter>> {
    let n = body.len() + 1;
    let mut out = Vec::with_capacity(n);
    for (i, ins) in body.into_iter().enumerate() {
        let fail = u8::try_from(n - i - 1)
            .map_err(|_| Error::Seccomp("rule too long for a BPF jump".into()))?;
        let off = |j: J| match j {
            J::Skip(k) => k,
            J::Fail => fail,
        };
        out.push(match ins {
            Ins::Stmt(code, k) => stmt(code, k),
            Ins::Jump(code, k, jt, jf) => jump(code, k, off(jt), off(jf)),
        });
    }
    out.push(stmt(BPF_RET_K, ret));
    Ok(out)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Compiles the spec's seccomp section for the native architecture.
///
/// Syscall names unknown on this architecture are skipped (as runc does). Other
/// architectures listed in `architectures` get the default action; unlisted ones are
/// killed. On x86_64, x32-ABI syscall numbers fail with `ENOSYS`.
pub fn compile(s: &LinuxSeccomp) -> Result<SeccompProgram> {
    let (native_arch, _) = syscalls::native();
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let others: Vec<u32> = s
        .architectures()
        .iter()
        .flatten()
        .map(|a| *a as u32)
        .filter(|a| *a != native_arch && *a != Arch::ScmpArchNative as u32)
        .collect();
    if others.len() > 16 {
        return Err(Error::Seccomp("too many architectures".into()));
    }
    let mut prog = vec![stmt(BPF_LD_W_ABS, OFF_ARCH)];
    let extra = usize::from(!others.is_empty());
    prog.push(jump(
        BPF_JEQ_K,
        native_arch,
        (others.len() + 1 + extra) as u8,
        0,
    ));
    for (i, a) in others.iter().enumerate() {
        prog.push(jump(BPF_JEQ_K, *a, (others.len() - i) as u8, 0));
    }
    prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS));
    if !others.is_empty() {
        prog.push(stmt(BPF_RET_K, default));
    }
    if cfg!(target_arch = "x86_64") {
        prog.push(stmt(BPF_LD_W_ABS, OFF_NR));
        prog.push(jump(BPF_JGE_K, 0x4000_0000, 0, 1));
        prog.push(stmt(
            BPF_RET_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ));
    }
    for (ri, rule) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{ri}]");
        let ret = action(rule.action(), rule.errno_ret(), &field)?;
        for name in rule.names() {
            let Some(nr) = syscalls::lookup(name) else {
                continue;
            };
            let mut body = vec![
                Ins::Stmt(BPF_LD_W_ABS, OFF_NR),
                Ins::Jump(BPF_JEQ_K, nr, J::Skip(0), J::Fail),
            ];
            for a in rule.args().iter().flatten() {
                arg_cond(&mut body, a, &field)?;
            }
            prog.extend(layout(body, ret)?);
        }
    }
    prog.push(stmt(BPF_RET_K, default));
    if prog.len() > 4096 {
        return Err(Error::Seccomp(format!(
            "filter has {} instructions (max 4096)",
            prog.len()
        )));
    }
    let mut flags = 0;
    for f in s.flags().iter().flatten() {
        use oci_spec::runtime::LinuxSeccompFilterFlag as F;
        flags |= match f {
            F::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            F::SeccompFilterFlagWaitKillableRecv => 0,
        } as u32;
    }
    Ok(SeccompProgram { insns: prog, flags })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the subset the compiler emits.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let f = prog[pc];
            pc += 1;
            match f.code {
                BPF_LD_W_ABS => {
                    let o = f.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                }
                BPF_AND_K => acc &= f.k,
                BPF_RET_K => return f.k,
                c => {
                    let t = match c {
                        BPF_JEQ_K => acc == f.k,
                        BPF_JGT_K => acc > f.k,
                        BPF_JGE_K => acc >= f.k,
                        _ => panic!("unknown op {c:#x}"),
                    };
                    pc += usize::from(if t { f.jt } else { f.jf });
                }
            }
        }
    }

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn errno_rule_and_default() {
        let s = spec(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                "syscalls": [{"names": ["mkdir", "mkdirat", "nosuchcall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
                             {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        let p = compile(&s).unwrap();
        let (arch, _) = syscalls::native();
        let mkdirat = syscalls::lookup("mkdirat").unwrap();
        let getppid = syscalls::lookup("getppid").unwrap();
        let read = syscalls::lookup("read").unwrap();
        let i = p.instructions();
        assert_eq!(run(i, arch, mkdirat, [0; 6]), libc::SECCOMP_RET_ERRNO | 42);
        assert_eq!(
            run(i, arch, getppid, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(run(i, arch, read, [0; 6]), libc::SECCOMP_RET_ALLOW);
        // An unlisted architecture is killed.
        assert_eq!(
            run(i, 0x4000_0003, read, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn argument_operators() {
        let (arch, _) = syscalls::native();
        let nr = syscalls::lookup("personality").unwrap();
        let big = 0x1_0000_0005u64;
        type Case<'a> = (&'a str, u64, Option<u64>, &'a [(u64, bool)]);
        let cases: &[Case<'_>] = &[
            (
                "SCMP_CMP_EQ",
                big,
                None,
                &[(big, true), (5, false), (big + 1, false)],
            ),
            (
                "SCMP_CMP_NE",
                big,
                None,
                &[(big, false), (5, true), (0x2_0000_0005, true)],
            ),
            (
                "SCMP_CMP_GT",
                big,
                None,
                &[
                    (big, false),
                    (big + 1, true),
                    (0x2_0000_0000, true),
                    (7, false),
                ],
            ),
            (
                "SCMP_CMP_GE",
                big,
                None,
                &[(big, true), (big - 1, false), (u64::MAX, true)],
            ),
            (
                "SCMP_CMP_LT",
                big,
                None,
                &[
                    (big, false),
                    (big - 1, true),
                    (7, true),
                    (0x2_0000_0000, false),
                ],
            ),
            (
                "SCMP_CMP_LE",
                big,
                None,
                &[(big, true), (big + 1, false), (0, true)],
            ),
            (
                "SCMP_CMP_MASKED_EQ",
                0xff00_0000_00ff,
                Some(0x1200_0000_0034),
                &[(0x12ab_cdef_0034, true), (0x1300_0000_0034, false)],
            ),
        ];
        for (op, value, two, checks) in cases {
            let two = two.map_or(String::new(), |t| format!(r#", "valueTwo": {t}"#));
            let s = spec(&format!(
                r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                    "args": [{{"index": 1, "value": {value}{two}, "op": "{op}"}}]}}]}}"#
            ));
            let p = compile(&s).unwrap();
            for (arg, denied) in checks.iter() {
                let got = run(p.instructions(), arch, nr, [0, *arg, 0, 0, 0, 0]);
                let want = if *denied {
                    libc::SECCOMP_RET_ERRNO | libc::EPERM as u32
                } else {
                    libc::SECCOMP_RET_ALLOW
                };
                assert_eq!(got, want, "{op} {value:#x} vs {arg:#x}");
            }
        }
    }

    #[test]
    fn notify_is_refused_with_field() {
        let s = spec(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#);
        let e = compile(&s).unwrap_err().to_string();
        assert!(e.contains("defaultAction"), "{e}");
    }
}

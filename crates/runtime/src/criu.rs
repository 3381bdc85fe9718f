//! CRIU through its RPC interface, as runc drives it: `criu swrk 3` with one end of a
//! `SOCK_SEQPACKET` socket pair on descriptor 3 (further descriptors, such as the
//! namespaces to restore into, from 4 on), one protobuf `criu_req` per message, and
//! `criu_resp` messages back: the notifications (`post-dump`, `setup-namespaces`,
//! `post-restore`, `orphan-pts-master` with the pty master as `SCM_RIGHTS`, ...), each
//! answered with `notify_success`, then the final answer of the request.
//!
//! The messages are those of CRIU's `images/rpc.proto` (proto2), with the fields
//! runc uses and their tags.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};

/// The protobuf messages of CRIU's RPC (`images/rpc.proto`).
pub(crate) mod rpc {
    /// `ext_mount_map`: an external mount, by its path in the container.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExtMountMap {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, required, tag = "2")]
        pub val: String,
    }

    /// `join_namespace`: a namespace to restore into, by path.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct JoinNamespace {
        #[prost(string, required, tag = "1")]
        pub ns: String,
        #[prost(string, required, tag = "2")]
        pub ns_file: String,
        #[prost(string, optional, tag = "3")]
        pub extra_opt: Option<String>,
    }

    /// `inherit_fd`: a descriptor of the criu process that stands for `key`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InheritFd {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(int32, required, tag = "2")]
        pub fd: i32,
    }

    /// `cgroup_root`: where a controller's (or, without one, every) cgroup goes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CgroupRoot {
        #[prost(string, optional, tag = "1")]
        pub ctrl: Option<String>,
        #[prost(string, required, tag = "2")]
        pub path: String,
    }

    /// `criu_page_server_info`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PageServerInfo {
        #[prost(string, optional, tag = "1")]
        pub address: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub port: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub fd: Option<i32>,
    }

    /// `criu_cg_mode`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum CgMode {
        Ignore = 0,
        CgNone = 1,
        Props = 2,
        Soft = 3,
        Full = 4,
        Strict = 5,
        Default = 6,
    }

    /// `criu_req_type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ReqType {
        Empty = 0,
        Dump = 1,
        Restore = 2,
        Check = 3,
        PreDump = 4,
        PageServer = 5,
        Notify = 6,
        CpuinfoDump = 7,
        CpuinfoCheck = 8,
        FeatureCheck = 9,
        Version = 10,
        WaitPid = 11,
        PageServerChld = 12,
        SinglePreDump = 13,
    }

    /// `criu_opts` (the fields runc sets).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opts {
        #[prost(int32, required, tag = "1")]
        pub images_dir_fd: i32,
        #[prost(int32, optional, tag = "2")]
        pub pid: Option<i32>,
        #[prost(bool, optional, tag = "3")]
        pub leave_running: Option<bool>,
        #[prost(bool, optional, tag = "4")]
        pub ext_unix_sk: Option<bool>,
        #[prost(bool, optional, tag = "5")]
        pub tcp_established: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub evasive_devices: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub shell_job: Option<bool>,
        #[prost(bool, optional, tag = "8")]
        pub file_locks: Option<bool>,
        #[prost(int32, optional, tag = "9")]
        pub log_level: Option<i32>,
        #[prost(string, optional, tag = "10")]
        pub log_file: Option<String>,
        #[prost(message, optional, tag = "11")]
        pub ps: Option<PageServerInfo>,
        #[prost(bool, optional, tag = "12")]
        pub notify_scripts: Option<bool>,
        #[prost(string, optional, tag = "13")]
        pub root: Option<String>,
        #[prost(string, optional, tag = "14")]
        pub parent_img: Option<String>,
        #[prost(bool, optional, tag = "15")]
        pub track_mem: Option<bool>,
        #[prost(bool, optional, tag = "16")]
        pub auto_dedup: Option<bool>,
        #[prost(int32, optional, tag = "17")]
        pub work_dir_fd: Option<i32>,
        #[prost(bool, optional, tag = "18")]
        pub link_remap: Option<bool>,
        #[prost(message, repeated, tag = "23")]
        pub ext_mnt: Vec<ExtMountMap>,
        #[prost(bool, optional, tag = "24")]
        pub manage_cgroups: Option<bool>,
        #[prost(message, repeated, tag = "25")]
        pub cg_root: Vec<CgroupRoot>,
        #[prost(bool, optional, tag = "26")]
        pub rst_sibling: Option<bool>,
        #[prost(message, repeated, tag = "27")]
        pub inherit_fd: Vec<InheritFd>,
        #[prost(enumeration = "CgMode", optional, tag = "34")]
        pub manage_cgroups_mode: Option<i32>,
        #[prost(string, repeated, tag = "37")]
        pub external: Vec<String>,
        #[prost(uint32, optional, tag = "38")]
        pub empty_ns: Option<u32>,
        #[prost(message, repeated, tag = "39")]
        pub join_ns: Vec<JoinNamespace>,
        #[prost(string, optional, tag = "44")]
        pub freeze_cgroup: Option<String>,
        #[prost(bool, optional, tag = "46")]
        pub tcp_skip_in_flight: Option<bool>,
        #[prost(bool, optional, tag = "48")]
        pub lazy_pages: Option<bool>,
        #[prost(int32, optional, tag = "49")]
        pub status_fd: Option<i32>,
        #[prost(bool, optional, tag = "50")]
        pub orphan_pts_master: Option<bool>,
        #[prost(string, optional, tag = "51")]
        pub config_file: Option<String>,
        #[prost(string, optional, tag = "53")]
        pub lsm_profile: Option<String>,
        #[prost(string, optional, tag = "63")]
        pub lsm_mount_context: Option<String>,
    }

    /// `criu_features`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Features {
        #[prost(bool, optional, tag = "1")]
        pub mem_track: Option<bool>,
        #[prost(bool, optional, tag = "2")]
        pub lazy_pages: Option<bool>,
    }

    /// `criu_req`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Req {
        #[prost(enumeration = "ReqType", required, tag = "1")]
        pub r#type: i32,
        #[prost(message, optional, tag = "2")]
        pub opts: Option<Opts>,
        #[prost(bool, optional, tag = "3")]
        pub notify_success: Option<bool>,
        #[prost(bool, optional, tag = "4")]
        pub keep_open: Option<bool>,
        #[prost(message, optional, tag = "5")]
        pub features: Option<Features>,
    }

    /// `criu_dump_resp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DumpResp {
        #[prost(bool, optional, tag = "1")]
        pub restored: Option<bool>,
    }

    /// `criu_restore_resp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RestoreResp {
        #[prost(int32, required, tag = "1")]
        pub pid: i32,
    }

    /// `criu_notify`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Notify {
        #[prost(string, optional, tag = "1")]
        pub script: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub pid: Option<i32>,
    }

    /// `criu_version`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Version {
        #[prost(int32, required, tag = "1")]
        pub major_number: i32,
        #[prost(int32, required, tag = "2")]
        pub minor_number: i32,
        #[prost(string, optional, tag = "3")]
        pub gitid: Option<String>,
        #[prost(int32, optional, tag = "4")]
        pub sublevel: Option<i32>,
    }

    /// `criu_resp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resp {
        #[prost(enumeration = "ReqType", required, tag = "1")]
        pub r#type: i32,
        #[prost(bool, required, tag = "2")]
        pub success: bool,
        #[prost(message, optional, tag = "3")]
        pub dump: Option<DumpResp>,
        #[prost(message, optional, tag = "4")]
        pub restore: Option<RestoreResp>,
        #[prost(message, optional, tag = "5")]
        pub notify: Option<Notify>,
        #[prost(int32, optional, tag = "7")]
        pub cr_errno: Option<i32>,
        #[prost(message, optional, tag = "8")]
        pub features: Option<Features>,
        #[prost(string, optional, tag = "9")]
        pub cr_errmsg: Option<String>,
        #[prost(message, optional, tag = "10")]
        pub version: Option<Version>,
    }

    impl Req {
        /// A request of `t` with `opts`.
        pub fn new(t: ReqType, opts: Option<Opts>) -> Req {
            Req {
                r#type: t as i32,
                opts,
                notify_success: None,
                keep_open: None,
                features: None,
            }
        }
    }
}

/// A notification CRIU sends while it works (`criu_notify`), with the descriptor it
/// passed along (the pty master of `orphan-pts-master`).
#[derive(Debug)]
pub(crate) struct Notification {
    /// The action: `pre-dump`, `post-dump`, `network-lock`, `setup-namespaces`, ...
    pub script: String,
    /// The restored root task (`setup-namespaces`, `post-restore`).
    pub pid: i32,
    /// A descriptor received with the message.
    pub fd: Option<OwnedFd>,
}

/// The CRIU binary `kcore-runc` runs (`criu` on `PATH` unless told otherwise).
#[derive(Debug, Clone)]
pub(crate) struct Criu {
    bin: PathBuf,
}

/// A CRIU version as runc compares them: major·10000 + minor·100 + sublevel.
pub(crate) type CriuVersion = u32;

fn criu_err(op: &'static str, message: impl Into<String>) -> Error {
    Error::Criu {
        op,
        message: message.into(),
    }
}

fn req_name(t: i32) -> &'static str {
    match rpc::ReqType::try_from(t) {
        Ok(rpc::ReqType::Dump) => "dump",
        Ok(rpc::ReqType::PreDump) => "pre-dump",
        Ok(rpc::ReqType::Restore) => "restore",
        Ok(rpc::ReqType::FeatureCheck) => "feature check",
        Ok(rpc::ReqType::Version) => "version",
        Ok(rpc::ReqType::Notify) => "notify",
        _ => "request",
    }
}

/// A close-on-exec duplicate of `fd` at 64 or above, so that placing the duplicates
/// on 3, 4, ... in the child cannot overwrite one not yet placed.
fn dup_high(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
    if n < 0 {
        return Err(Error::Sys {
            op: "dup descriptor for criu".into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: n was just created.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Receives one message and the first descriptor passed with it.
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut cbuf = [0u64; 32];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: a valid socket and message header.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut fds = Vec::new();
        // SAFETY: walking the control messages the kernel wrote into cbuf.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count = ((*c).cmsg_len as usize - (data as usize - c as usize))
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let mut fds = fds.into_iter();
        return Ok((n as usize, fds.next()));
    }
}

fn send(sock: &OwnedFd, req: &rpc::Req) -> io::Result<()> {
    let data = req.encode_to_vec();
    // SAFETY: a valid socket and buffer.
    let n = unsafe { libc::send(sock.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Criu {
    /// CRIU at `bin` (a name is looked up on `PATH`).
    pub(crate) fn new(bin: impl Into<PathBuf>) -> Criu {
        Criu { bin: bin.into() }
    }

    /// Runs `req` in a new `criu swrk`. `extra` are placed on descriptors 4, 5, ...
    /// of the criu process; `spawned` sees its pid before the request is sent (runc
    /// moves a restoring criu into the container's cgroup there, and names the cgroup
    /// roots in the request); every notification goes to `notify`, and an error from
    /// it fails the request. Returns CRIU's final answer, which reported success.
    pub(crate) fn run(
        &self,
        mut req: rpc::Req,
        extra: &[BorrowedFd<'_>],
        spawned: &mut dyn FnMut(i32, &mut rpc::Req) -> Result<()>,
        notify: &mut dyn FnMut(Notification) -> Result<()>,
    ) -> Result<rpc::Resp> {
        let op = req_name(req.r#type);
        let _span = tracing::info_span!("criu", op).entered();
        let (client, server) = crate::process::seqpacket_pair()?;
        let mut high = vec![dup_high(server.as_fd())?];
        for fd in extra {
            high.push(dup_high(*fd)?);
        }
        drop(server);
        let raws: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(["swrk", "3"]);
        // SAFETY: only dup2(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in raws.iter().enumerate() {
                    if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| Error::Sys {
            op: format!("start {} swrk", self.bin.display()),
            source,
        })?;
        drop(high);
        let res = (|| {
            spawned(child.id() as i32, &mut req)?;
            send(&client, &req).map_err(|source| Error::Sys {
                op: "send the request to criu".into(),
                source,
            })?;
            let mut buf = vec![0u8; 10 * 4096];
            loop {
                let (n, fd) = recv(&client, &mut buf).map_err(|source| Error::Sys {
                    op: "read criu's answer".into(),
                    source,
                })?;
                if n == 0 {
                    return Err(criu_err(op, "criu closed the connection without an answer"));
                }
                if n == buf.len() {
                    return Err(criu_err(op, "criu's answer does not fit the buffer"));
                }
                let resp = rpc::Resp::decode(&buf[..n])
                    .map_err(|e| criu_err(op, format!("undecodable answer: {e}")))?;
                if !resp.success {
                    let mut m = format!("errno {}", resp.cr_errno.unwrap_or(0));
                    if let Some(s) = resp.cr_errmsg.as_deref().filter(|s| !s.is_empty()) {
                        m.push_str(": ");
                        m.push_str(s);
                    }
                    return Err(criu_err(op, m));
                }
                if resp.r#type == rpc::ReqType::Notify as i32 {
                    let n = resp.notify.clone().unwrap_or(rpc::Notify {
                        script: None,
                        pid: None,
                    });
                    notify(Notification {
                        script: n.script.unwrap_or_default(),
                        pid: n.pid.unwrap_or(0),
                        fd,
                    })?;
                    let mut ack = rpc::Req::new(rpc::ReqType::Notify, None);
                    ack.notify_success = Some(true);
                    send(&client, &ack).map_err(|source| Error::Sys {
                        op: "answer criu's notification".into(),
                        source,
                    })?;
                    continue;
                }
                return Ok(resp);
            }
        })();
        // SAFETY: shutting down our end makes a waiting criu (pre-dump) exit.
        unsafe { libc::shutdown(client.as_raw_fd(), libc::SHUT_WR) };
        drop(client);
        let status = child.wait().map_err(|source| Error::Sys {
            op: "wait for criu".into(),
            source,
        })?;
        let resp = res?;
        // A pre-dump criu waits for the next request and exits non-zero once the
        // connection closes: its answer is what counts (as in runc).
        if !status.success() && req.r#type != rpc::ReqType::PreDump as i32 {
            return Err(criu_err(op, format!("criu exited with {status}")));
        }
        Ok(resp)
    }

    /// The CRIU version (the `VERSION` request).
    pub(crate) fn version(&self) -> Result<CriuVersion> {
        let resp = self.run(
            rpc::Req::new(rpc::ReqType::Version, None),
            &[],
            &mut |_, _| Ok(()),
            &mut |_| Ok(()),
        )?;
        let v = resp
            .version
            .ok_or_else(|| criu_err("version", "no version in the answer"))?;
        Ok(v.major_number.max(0) as u32 * 10000
            + v.minor_number.max(0) as u32 * 100
            + v.sublevel.unwrap_or(0).max(0) as u32)
    }

    /// Checks that CRIU and the kernel offer `want` (runc's `checkCriuFeatures`);
    /// the error names what is missing.
    pub(crate) fn check_features(&self, want: &rpc::Features) -> Result<()> {
        let mut req = rpc::Req::new(rpc::ReqType::FeatureCheck, None);
        req.features = Some(want.clone());
        let resp = self.run(req, &[], &mut |_, _| Ok(()), &mut |_| Ok(()))?;
        let have = resp.features.unwrap_or(rpc::Features {
            mem_track: None,
            lazy_pages: None,
        });
        let missing = missing_features(want, &have);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::CriuMissingFeatures { missing })
        }
    }
}

/// What `want` asks for that `have` lacks, by criu's option names.
pub(crate) fn missing_features(want: &rpc::Features, have: &rpc::Features) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if want.mem_track == Some(true) && have.mem_track != Some(true) {
        missing.push("--memory-track");
    }
    if want.lazy_pages == Some(true) && have.lazy_pages != Some(true) {
        missing.push("--lazy-pages");
    }
    missing
}

/// The lines of a CRIU log around its errors (runc's `logCriuErrors`: each line
/// holding `Error` with up to five lines before it), for the error report.
pub(crate) fn log_errors(log: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut keep = vec![false; lines.len()];
    for (i, l) in lines.iter().enumerate() {
        if l.contains("Error") {
            for k in keep.iter_mut().take(i + 1).skip(i.saturating_sub(5)) {
                *k = true;
            }
        }
    }
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(i, l)| format!("{}:{l}", i + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_criu_tags() {
        // criu_req{type: DUMP, opts{images_dir_fd: 5, pid: 42, leave_running: true,
        // manage_cgroups_mode: SOFT}}, encoded by hand from rpc.proto's tags.
        let mut opts = rpc::Opts {
            images_dir_fd: 5,
            ..Default::default()
        };
        opts.pid = Some(42);
        opts.leave_running = Some(true);
        opts.manage_cgroups_mode = Some(rpc::CgMode::Soft as i32);
        let req = rpc::Req::new(rpc::ReqType::Dump, Some(opts));
        let inner = [0x08, 5, 0x10, 42, 0x18, 1, 0x90, 0x02, 3];
        let mut want = vec![0x08, 1, 0x12, inner.len() as u8];
        want.extend(inner);
        assert_eq!(req.encode_to_vec(), want);
        // criu_resp{type: NOTIFY, success: true, notify{script: "post-restore", pid: 7}}
        let mut data = vec![0x08, 6, 0x10, 1, 0x2a, 16, 0x0a, 12];
        data.extend(b"post-restore");
        data.extend([0x10, 7]);
        let r = rpc::Resp::decode(data.as_slice()).unwrap();
        assert_eq!(r.r#type, rpc::ReqType::Notify as i32);
        let n = r.notify.unwrap();
        assert_eq!(
            (n.script.as_deref(), n.pid),
            (Some("post-restore"), Some(7))
        );
    }

    #[test]
    fn missing_features_are_named() {
        let want = rpc::Features {
            mem_track: Some(true),
            lazy_pages: None,
        };
        let none = rpc::Features {
            mem_track: Some(false),
            lazy_pages: None,
        };
        assert_eq!(missing_features(&want, &none), ["--memory-track"]);
        let all = rpc::Features {
            mem_track: Some(true),
            lazy_pages: Some(true),
        };
        assert!(missing_features(&want, &all).is_empty());
    }

    #[test]
    fn log_errors_quote_the_lines_before_each_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dump.log");
        let mut text = String::new();
        for i in 1..=12 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str("(00.1) Error (criu/x.c:1): boom\n");
        std::fs::write(&p, text).unwrap();
        let got = log_errors(&p);
        assert_eq!(got.len(), 6);
        assert_eq!(got[0], "8:line 8");
        assert!(got[5].starts_with("13:") && got[5].contains("boom"));
        assert!(log_errors(&d.path().join("none")).is_empty());
    }

    #[test]
    fn a_missing_criu_binary_is_a_clear_error() {
        let c = Criu::new("/nonexistent/criu");
        let e = c.version().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/criu"), "{e}");
    }

    /// The real protocol against `criu` (or `$KCORE_CRIU`), where `criu check` passes.
    #[test]
    fn version_from_a_working_criu() {
        let bin = std::env::var("KCORE_CRIU").unwrap_or_else(|_| "criu".into());
        match std::process::Command::new(&bin).arg("check").output() {
            Ok(o) if o.status.success() => {
                let v = Criu::new(&bin).version().unwrap();
                assert!(v >= 30000, "{v}");
            }
            Ok(o) => eprintln!(
                "skipped: `{bin} check` fails here: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
            Err(e) => eprintln!("skipped: no {bin}: {e}"),
        }
    }
}
